// An image client written the way a product team writes one: Node 20, fetch, no dependencies.
//
// It knows nothing of the conformance harness but where to go: IMAGEGEN_BASE_URL,
// IMAGEGEN_API_KEY, IMAGEGEN_REQUEST (the body to send) and IMAGEGEN_OUTPUT_DIR. Its waits
// are real seconds (1.5 s between polls, Retry-After in seconds), its deadline is minutes,
// and nothing in it divides by a time scale.
//
//   node client.mjs cloudsway|fal|yunyx [--fault FAULT]
//
// --fault switches on one deliberate mistake (the same names as client.py) for the harness to find.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const POLL_MS = 1500;
const DEADLINE_MS = 300_000; // five minutes for a task, then give up
const TIMEOUT_MS = 120_000;
const ATTEMPTS = 5;
const TRANSIENT = new Set([500, 502, 503, 504]);
const FAULTS = new Set([
  "no-pause", "poll-10ms", "ignore-retry-after", "poll-after-done", "no-auth", "rebuild-urls",
  "failed-as-success", "give-up-on-503", "retry-4xx",
]);

class Failure extends Error {
  constructor(message, status = null) {
    super(message);
    this.status = status;
  }
}

const [provider, flag, faultArg] = process.argv.slice(2);
const fault = flag === "--fault" ? faultArg : null;
if (fault !== null && !FAULTS.has(fault)) throw new Error(`unknown fault ${fault}`);
const env = process.env;
const base = env.IMAGEGEN_BASE_URL.replace(/\/$/, "");
const scheme = provider === "fal" ? "Key" : "Bearer";

async function call(method, url, { body, idempotent, retry5xx = idempotent } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (fault !== "no-auth") headers.Authorization = `${scheme} ${env.IMAGEGEN_API_KEY}`;
  let backoff = 1000;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const last = attempt === ATTEMPTS;
    let answer;
    try {
      answer = await fetch(url, {
        method, headers, body: body && JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (error) {
      if (!retry5xx || last) throw new Failure(`${method} ${url}: ${error.message}`);
      await sleep(backoff);
      backoff *= 2;
      continue;
    }
    const { status } = answer;
    const retryAfter = answer.headers.get("retry-after");
    if ((status === 429 || (retryAfter && TRANSIENT.has(status))) && !last) {
      await answer.arrayBuffer();
      if (fault !== "ignore-retry-after") await sleep(Number(retryAfter || "1") * 1000);
      continue;
    }
    if (TRANSIENT.has(status) && retry5xx && !last && fault !== "give-up-on-503") {
      await answer.arrayBuffer();
      await sleep(backoff);
      backoff *= 2;
      continue;
    }
    if (status >= 400 && status < 500 && fault === "retry-4xx" && attempt < 3) {
      await answer.arrayBuffer();
      await sleep(1000);
      continue;
    }
    if (status >= 400) {
      throw new Failure(`${method} ${url} answered HTTP ${status}: ${(await answer.text()).slice(0, 200)}`, status);
    }
    return answer;
  }
  throw new Failure(`${method} ${url}: still failing after ${ATTEMPTS} attempts`);
}

const getJson = async (url) => (await call("GET", url, { idempotent: true })).json();

async function pollPause() {
  if (fault === "poll-10ms") await sleep(10);
  else if (fault !== "no-pause") await sleep(POLL_MS);
}

async function saveImages(urls) {
  const saved = [];
  for (const [index, url] of urls.entries()) {
    const content = url.startsWith("data:") // fal sync_mode answers the image inline
      ? Buffer.from(url.slice(url.indexOf(",") + 1), "base64")
      : Buffer.from(await (await call("GET", url, { idempotent: true })).arrayBuffer());
    const path = join(env.IMAGEGEN_OUTPUT_DIR, `image-${index}`);
    await writeFile(path, content);
    saved.push({ url: url.slice(0, 60), path });
  }
  return saved;
}

async function cloudsway(request) {
  const images = `${base}/v2/ai/my-endpoint/images`;
  const created = await call("POST", `${images}/generations`, { body: request, idempotent: false });
  const { taskId } = await created.json();
  const started = Date.now();
  for (;;) {
    await pollPause();
    const task = await getJson(`${images}/tasks/${taskId}`);
    if (task.status === "completed") {
      if (fault === "poll-after-done") {
        for (let i = 0; i < 3; i++) {
          await pollPause();
          await getJson(`${images}/tasks/${taskId}`);
        }
      }
      return saveImages(task.imageUrls);
    }
    if (task.status === "failed") {
      if (fault === "failed-as-success") return [];
      throw new Failure(`task ${taskId} failed: ${task.message}`);
    }
    if (Date.now() - started > DEADLINE_MS) throw new Failure(`task ${taskId} not done in time; giving up`);
  }
}

async function fal(request) {
  const queued = await (await call("POST", `${base}/fal-ai/flux-1/dev`, { body: request, idempotent: false })).json();
  let { status_url: statusUrl, response_url: responseUrl } = queued;
  if (fault === "rebuild-urls") {
    responseUrl = `${base}/fal-ai/flux-1/dev/requests/${queued.request_id}`;
    statusUrl = `${responseUrl}/status`;
  }
  const started = Date.now();
  while ((await getJson(statusUrl)).status !== "COMPLETED") {
    if (Date.now() - started > DEADLINE_MS) {
      // Free the runner; the request is given up either way.
      await call("PUT", queued.cancel_url || `${responseUrl}/cancel`, { idempotent: true }).catch(() => {});
      throw new Failure(`request ${queued.request_id} not done in time; cancelled`);
    }
    await pollPause();
  }
  if (fault === "poll-after-done") {
    for (let i = 0; i < 3; i++) {
      await pollPause();
      await getJson(statusUrl);
    }
  }
  let result;
  try {
    result = await getJson(responseUrl);
  } catch (error) {
    if (fault === "failed-as-success") return [];
    throw error;
  }
  return saveImages(result.images.map((image) => image.url));
}

async function yunyx(request) {
  // 503 "overloaded" means the request was not processed: safe to send again.
  const answer = await call("POST", `${base}/v1/images/generations`, {
    body: request, idempotent: false, retry5xx: true,
  });
  return saveImages((await answer.json()).images.map((image) => image.url)); // links expire in 1 h
}

const generate = { cloudsway, fal, yunyx }[provider];
if (!generate) throw new Error(`usage: node client.mjs cloudsway|fal|yunyx [--fault FAULT]`);
generate(JSON.parse(env.IMAGEGEN_REQUEST)).then(
  (images) => console.log(JSON.stringify({ images })),
  (error) => {
    console.log(JSON.stringify({ error: { message: String(error.message || error), status: error.status ?? null } }));
    process.exitCode = 1;
  },
);
