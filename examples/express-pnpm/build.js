// The `build` script: runs after `pnpm install`, before devDependencies are pruned.
const fs = require("fs");
require("is-number"); // a devDependency: present now, gone from the slug
fs.mkdirSync("public", { recursive: true });
fs.writeFileSync("public/build-info.txt", `built by pnpm ${process.env.npm_config_user_agent || "?"}\n`);
