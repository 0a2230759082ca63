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

// Tools with the streaming helper: the model calls get_weather, the
// program runs it and feeds the call and its result back.
const tools = [{
  type: "function",
  function: {
    name: "get_weather", description: "The weather in a city", strict: true,
    parameters: {
      type: "object", properties: { city: { type: "string", description: "The city's name" } },
      required: ["city"], additionalProperties: false,
    },
  },
}];
messages = [{ role: "user", content: "What is the weather in Paris?" }];
runner = client.chat.completions.stream({ model, messages, tools, tool_choice: "auto", parallel_tool_calls: false, max_tokens: 64 }, as("node-tools-stream"));
final = await runner.finalChatCompletion();
const call = final.choices[0].message.tool_calls?.[0];
if (!call) throw new Error("no tool call in the recorded answer");
messages.push(final.choices[0].message);
messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify({ city: JSON.parse(call.function.arguments).city, celsius: 21 }) });
runner = client.chat.completions.stream({ model, messages, tools, max_tokens: 64 }, as("node-tools-stream-turn2"));
await runner.finalChatCompletion();

// Structured output with zod, the SDK's own helper.
const { zodResponseFormat } = await import("openai/helpers/zod");
const { z } = await import("zod");
const Weather = z.object({ city: z.string(), celsius: z.number(), sunny: z.boolean() });
messages = [{ role: "user", content: "The weather in Paris, as JSON." }];
const parsed = await client.chat.completions.parse({ model, messages, response_format: zodResponseFormat(Weather, "weather"), max_tokens: 64 }, as("node-parse-zod"));
if (!parsed.choices[0].message.parsed) throw new Error("nothing parsed");
messages.push(parsed.choices[0].message, { role: "user", content: "And in Rome?" });
await client.chat.completions.parse({ model, messages, response_format: zodResponseFormat(Weather, "weather"), max_tokens: 64 }, as("node-parse-zod-turn2"));
