// An Express app installed by pnpm: shows what the build left behind.
const fs = require("fs");
const express = require("express");

const app = express();
app.get("/", (req, res) => {
  // Looked for in node_modules itself: Debian's node (the stack's) also finds
  // modules Debian installed under /usr/share/nodejs, is-number among them.
  const devDependency = fs.existsSync("node_modules/is-number");
  res.send(
    `<h1>Express with pnpm</h1><p>node ${process.version}, ` +
      `${fs.readFileSync("public/build-info.txt", "utf8").trim()}, ` +
      `devDependencies present: ${devDependency}, ` +
      `node_modules/.pnpm: ${fs.existsSync("node_modules/.pnpm")}</p>`
  );
});
app.listen(process.env.PORT || 5000);
