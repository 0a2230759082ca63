// Makes the calls a Node.js program makes with npm's openai package, against
// the capturing server whose base URL is the first argument. Run by
// sdkrecord; each request names itself with an X-Record-As header.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "sk-recording", maxRetries: 0 });
const as = (name) => ({ headers: { "X-Record-As": name } });
const model = "memload-test";
const first = [
  { role: "developer", content: "You are brief." },
  { role: "user", content: "Hello!", name: "ada" },
];

// A plain request with the common sampling options, then the answer's
// message fed back.
let messages = [...first];
const completion = await client.chat.completions.create({
  model, messages, max_completion_tokens: 8, temperature: 0, top_p: 1, seed: 42, stop: "\n\n",
  presence_penalty: 0, frequency_penalty: 0, n: 1, user: "recording", store: false,
  metadata: { app: "recording" }, response_format: { type: "text" },
}, as("node-create"));
messages.push(completion.choices[0].message, { role: "user", content: "And again?" });
await client.chat.completions.create({ model, messages, max_tokens: 8 }, as("node-create-turn2"));

// stream: true, read chunk by chunk.
const stream = await client.chat.completions.create({
  model, messages: first, stream: true, stream_options: { include_usage: true }, max_tokens: 8,
}, as("node-stream"));
for await (const chunk of stream) void chunk;

// The streaming helper, and the most common multi-turn pattern:
// messages.push(final.choices[0].message).
messages = [...first];
let runner = client.chat.completions.stream({ model, messages, max_tokens: 8 }, as("node-stream-helper"));
let final = await runner.finalChatCompletion();
messages.push(final.choices[0].message);
messages.push({ role: "user", content: "Tell me more." });
runner = client.chat.completions.stream({ model, messages, max_tokens: 8 }, as("node-stream-helper-turn2"));
final = await runner.finalChatCompletion();
messages.push(final.choices[0].message);
messages.push({ role: "user", content: [{ type: "text", text: "Once more," }, { type: "text", text: " in parts." }] });
runner = client.chat.completions.stream({ model, messages, max_tokens: 8 }, as("node-stream-helper-turn3"));
await runner.finalChatCompletion();

// Model discovery, as frontends do first.
const models = await client.models.list(as("node-models-list"));
for await (const m of models) void m;
await client.models.retrieve(model, as("node-models-retrieve"));
