// The official OpenAI Node SDK (npm "openai", pinned in package.json) against a running
// `eldr serve`: what a client written for OpenAI or vLLM does, unchanged. Usage:
//   node openai_sdk_test.mjs BASE_URL MODEL       (driven by tests/e2e/sdk_test.py)
// Prints "ok ..." / "FAIL ..." lines and exits non-zero on any failure.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sdk-key", maxRetries: 0, timeout: 60000 });
let failures = 0;
function check(cond, what) {
  console.log(`${cond ? "  ok  " : "  FAIL"} ${what}`);
  if (!cond) failures++;
}

async function main() {
  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === model, `models.list() names ${model}`);
  const one = await client.models.retrieve(model);
  check(one.id === model, "models.retrieve() finds it");

  const c = await client.completions.create({ model, prompt: "sdk completion", max_tokens: 5 });
  check(c.choices.length === 1 && typeof c.choices[0].text === "string" &&
            c.usage?.completion_tokens === 5,
        "completions.create(): one choice, usage.completion_tokens = 5");

  let events = 0, text = "";
  const stream = await client.completions.create(
      { model, prompt: "sdk stream", max_tokens: 6, stream: true });
  for await (const chunk of stream) {
    events++;
    text += chunk.choices[0]?.text ?? "";
  }
  check(events >= 6 && text.length > 0, `completions stream: ${events} events, text arrives`);

  const chat = await client.chat.completions.create(
      { model, messages: [{ role: "user", content: "sdk chat" }], max_tokens: 4 });
  check(chat.choices[0].message.role === "assistant" &&
            typeof chat.choices[0].message.content === "string",
        "chat.completions.create(): an assistant message");

  let deltas = 0;
  const cs = await client.chat.completions.create(
      { model, messages: [{ role: "user", content: "sdk chat stream" }], max_tokens: 4,
        stream: true });
  for await (const chunk of cs) deltas += chunk.choices.length;
  check(deltas >= 4, `chat stream: ${deltas} deltas`);

  // stream_options.include_usage: the last event has no choices and carries the usage.
  let usage = null, last = null;
  const us = await client.chat.completions.create(
      { model, messages: [{ role: "user", content: "sdk usage" }], max_tokens: 3, stream: true,
        stream_options: { include_usage: true } });
  for await (const chunk of us) {
    last = chunk;
    if (chunk.usage) usage = chunk.usage;
  }
  check(usage?.completion_tokens === 3 && last?.choices.length === 0,
        `stream_options.include_usage: a final usage event (completion_tokens ${usage?.completion_tokens})`);

  // The SDK's own streaming helper assembles the message from the deltas.
  const helper = client.chat.completions.stream(
      { model, messages: [{ role: "user", content: "sdk helper" }], max_tokens: 4 });
  let helperDeltas = 0;
  helper.on("content", () => helperDeltas++);
  const final = await helper.finalChatCompletion();
  check(final.choices[0].message.role === "assistant" &&
            typeof final.choices[0].message.content === "string" &&
            final.choices[0].message.content.length > 0 && helperDeltas >= 1,
        `chat.completions.stream() helper: final message of ${helperDeltas} deltas`);

  const raw = await client.completions
      .create({ model, prompt: "raw", max_tokens: 2 })
      .withResponse();
  check(/.+/.test(raw.response.headers.get("x-request-id") ?? ""),
        "the response carries an X-Request-Id the SDK can read");

  try {
    await client.completions.create({ model, max_tokens: 2 });  // no prompt
    check(false, "a request without a prompt is refused");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 &&
              typeof e.message === "string" && e.message.includes("prompt"),
          `a request without a prompt -> BadRequestError 400 (${e.status}: ${e.message})`);
    check(e instanceof OpenAI.APIError && /.+/.test(e.requestID ?? ""),
          `the error is an APIError carrying the request id (${e.requestID})`);
  }
  try {
    await client.completions.create({ model, prompt: "two", max_tokens: 2, n: 2 });
    check(false, "n = 2 is refused");
  } catch (e) {
    check(e.status === 400, `n = 2 -> 400 the SDK reports (${e.status})`);
  }
}

main()
    .catch((e) => {
      console.log(`  FAIL unexpected error: ${e.stack ?? e}`);
      failures++;
    })
    .finally(() => {
      console.log(failures ? `${failures} FAILED` : "all SDK checks passed");
      process.exit(failures ? 1 : 0);
    });
