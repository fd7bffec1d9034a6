// A background worker: one unit of 'work' every few seconds, visible in `slipway logs`.
let done = 0;
const interval = Number(process.env.WORK_INTERVAL || 5) * 1000;
const timer = setInterval(() => console.log(`worker: processed job ${++done}`), interval);
process.on("SIGTERM", () => { clearInterval(timer); console.log("worker: stopping"); process.exit(0); });
