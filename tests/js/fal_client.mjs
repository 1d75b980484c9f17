// The official @fal-ai/client, unmodified, pointed at the fal mock by a request middleware that
// rewrites https://queue.fal.run and https://fal.run to the mock's two listeners.
// Usage: node fal_client.mjs '{"queue": URL, "run": URL, "steps": [...]}'; prints one JSON line.
import { createFalClient } from "@fal-ai/client";

const args = JSON.parse(process.argv[2]);
const hosts = [["https://queue.fal.run", args.queue], ["https://fal.run", args.run]];
const fal = createFalClient({
  credentials: args.key ?? "test-key",
  requestMiddleware: async (request) => {
    for (const [real, mock] of hosts) {
      if (request.url.startsWith(real + "/")) {
        return { ...request, url: mock + request.url.slice(real.length) };
      }
    }
    return request;
  },
});

const APP = "fal-ai/flux-1/dev";
const out = {};
for (const step of args.steps) {
  if (step.do === "stream") {
    const stream = await fal.stream(APP, { input: step.input });
    const events = [];
    for await (const event of stream) {
      events.push(event);
    }
    out.stream = { events, done: await stream.done(), requestId: stream.requestId };
  } else if (step.do === "subscribe") {
    const updates = [];
    const result = await fal.subscribe(APP, {
      input: step.input,
      logs: true,
      mode: step.mode ?? "polling",
      pollInterval: 50,
      onQueueUpdate: (update) => updates.push(update),
    });
    out.subscribe = { data: result.data, requestId: result.requestId, updates };
  }
}
console.log(JSON.stringify(out));
