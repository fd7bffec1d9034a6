// The `build` script: runs after `yarn install`, before devDependencies are pruned.
const fs = require("fs");
require("left-pad"); // a devDependency: resolvable now, not in the dyno
fs.mkdirSync("public", { recursive: true });
const agent = (process.env.npm_config_user_agent || "?").split(" ")[0];
fs.writeFileSync("public/build-info.txt", `built by ${agent}\n`);
