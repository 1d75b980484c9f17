// A Cloudsway client in JavaScript (Node 20, no dependencies): the harness runs any language.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

const env = process.env;
const base = `${env.IMAGEGEN_BASE_URL}/v2/ai/node/images`;
const scale = Number(env.IMAGEGEN_TIME_SCALE || "1");
const headers = { Authorization: `Bearer ${env.IMAGEGEN_API_KEY}`, "Content-Type": "application/json" };
const sleep = (seconds) => new Promise((done) => setTimeout(done, (seconds * 1000) / scale));

async function call(method, url, body) {
  let backoff = 1;
  for (let attempt = 1; attempt <= 6; attempt++) {
    const answer = await fetch(url, { method, headers, body: body && JSON.stringify(body) });
    if (answer.status === 429) {
      await sleep(Number(answer.headers.get("retry-after") || "1"));
      continue;
    }
    if (answer.status >= 500 && method === "GET") {
      await sleep(backoff);
      backoff *= 2;
      continue;
    }
    if (!answer.ok) throw new Error(`${method} ${url}: HTTP ${answer.status} ${await answer.text()}`);
    return answer;
  }
  throw new Error(`${method} ${url}: still failing`);
}

async function main() {
  const request = JSON.parse(env.IMAGEGEN_REQUEST);
  const { taskId } = await (await call("POST", `${base}/generations`, request)).json();
  let wait = 1;
  for (let waited = 0; waited < 300; waited += wait, wait = Math.min(wait * 1.5, 5)) {
    await sleep(wait);
    const task = await (await call("GET", `${base}/tasks/${taskId}`)).json();
    if (task.status === "failed") throw new Error(`task ${taskId} failed`);
    if (task.status === "completed") {
      const images = [];
      for (const [i, url] of task.imageUrls.entries()) {
        const path = join(env.IMAGEGEN_OUTPUT_DIR, `node-${i}.png`);
        await writeFile(path, Buffer.from(await (await call("GET", url)).arrayBuffer()));
        images.push({ url, path });
      }
      return { images };
    }
  }
  throw new Error(`task ${taskId} did not finish`);
}

main().then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    console.log(JSON.stringify({ error: { message: String(error.message || error) } }));
    process.exit(1);
  },
);
