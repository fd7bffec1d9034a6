// An Express app installed by Yarn Berry with Plug'n'Play: there is no
// node_modules; node resolves every package through /app/.pnp.cjs.
const fs = require("fs");
const express = require("express");

function resolvable(name) {
  try {
    require.resolve(name);
    return true;
  } catch {
    return false;
  }
}

const app = express();
app.get("/", (req, res) => {
  res.send(
    `<h1>Express with Yarn Berry</h1><p>node ${process.version}, ` +
      `${fs.readFileSync("public/build-info.txt", "utf8").trim()}, ` +
      `node_modules present: ${fs.existsSync("node_modules")}, ` +
      `Plug'n'Play: ${Boolean(process.versions.pnp)}, ` +
      `devDependencies present: ${resolvable("left-pad")}</p>`
  );
});
app.listen(process.env.PORT || 5000);
