// The `build` script: runs at build time, after the install, before pruning.
const fs = require("fs");
require("is-number"); // a devDependency: there at build time, pruned afterwards
fs.mkdirSync("public", { recursive: true });
fs.writeFileSync("public/build-info.txt", `built with node ${process.version}\n`);
