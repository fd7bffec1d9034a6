// An Express app: shows what the build left behind.
const fs = require("fs");
const express = require("express");

const app = express();
app.get("/", (req, res) => {
  let devDependency = true;
  try {
    require.resolve("is-number");
  } catch (e) {
    devDependency = false;
  }
  res.send(
    `<h1>Express with yarn</h1><p>node ${process.version}, ` +
      `${fs.readFileSync("public/build-info.txt", "utf8").trim()}, ` +
      `devDependencies present: ${devDependency}, dyno ${process.env.DYNO || "?"}</p>`
  );
});
app.listen(process.env.PORT || 5000);
