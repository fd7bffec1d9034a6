// A small web app for Slipway: config vars, the dyno's name, a log line per request.
const http = require("http");

const greeting = process.env.GREETING || "Hello from Slipway (Node)";
const dyno = process.env.DYNO || "?";
const port = Number(process.env.PORT || 5000);

const server = http.createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  if (req.url === "/json") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ greeting, dyno }));
    return;
  }
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><title>Slipway example</title><h1>${greeting}</h1><p>Served by dyno <code>${dyno}</code>.</p>`);
});

server.listen(port, "0.0.0.0", () => console.log(`listening on port ${port} as ${dyno}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
