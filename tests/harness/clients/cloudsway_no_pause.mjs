// A Cloudsway client in Node that polls its task with no pause at all: the live rules must
// catch it (client.poll-interval). Everything else about it is correct.
const env = process.env;
const base = `${env.IMAGEGEN_BASE_URL}/v2/ai/node/images`;
const headers = { Authorization: `Bearer ${env.IMAGEGEN_API_KEY}`, "Content-Type": "application/json" };

const created = await fetch(`${base}/generations`, {
  method: "POST", headers, body: JSON.stringify({ prompts: "a fox", aspect_ratio: "1:1" }),
});
const { taskId } = await created.json();
for (let polls = 0; polls < 200; polls++) {
  const task = await (await fetch(`${base}/tasks/${taskId}`, { headers })).json();
  if (task.status === "completed" || task.status === "failed") {
    console.log(JSON.stringify({ images: task.imageUrls || [] }));
    process.exit(task.status === "completed" ? 0 : 1);
  }
}
process.exit(1);
