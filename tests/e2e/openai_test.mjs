// End-to-end checks of the mesh-llm API with the official `openai` npm
// client, as agents use it. Run by test_openai.sh, which starts the server.
// Env: BASE_URL (http://127.0.0.1:PORT/v1), MESH_BIN, MODEL_PATH.
import OpenAI from 'openai';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';

const baseURL = process.env.BASE_URL;
const meshBin = process.env.MESH_BIN;
const modelPath = process.env.MODEL_PATH;
const client = new OpenAI({ baseURL, apiKey: 'mesh', maxRetries: 0, timeout: 60000 });
const root = baseURL.replace(/\/v1$/, '');

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

async function applyTemplate(messages) {
  const r = await fetch(`${root}/apply-template`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages }),
  });
  assert.equal(r.status, 200);
  return r.json();
}

// The ChatML text the server must render for a model without a template.
function chatml(messages) {
  let s = '';
  for (const m of messages) s += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
  return s + '<|im_start|>assistant\n';
}

// Runs a mesh-llm subcommand; null when it is not built yet.
function mesh(args, input) {
  try {
    return execFileSync(meshBin, args, { encoding: 'utf8', input: input ?? '', stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    if (/not built yet/.test(String(e.stderr))) return null;
    throw new Error(`${meshBin} ${args.join(' ')} failed: ${e.stderr}`);
  }
}

async function chat(messages, opts = {}) {
  return client.chat.completions.create({ model: modelId, messages, temperature: 0, ...opts });
}

async function chatStream(messages, opts = {}) {
  const stream = await client.chat.completions.create({
    model: modelId, messages, temperature: 0, stream: true,
    stream_options: { include_usage: true }, ...opts,
  });
  let text = '';
  let finish = null;
  let usage = null;
  let role = null;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    if (!c.choices.length) continue;
    const ch = c.choices[0];
    if (ch.delta.role) role = ch.delta.role;
    if (ch.delta.content) text += ch.delta.content;
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  return { text, finish, usage, role, chunks };
}

let modelId = null;
const story = [{ role: 'user', content: 'Once upon a time' }];

await check('models.list', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.deepEqual(ids, ['stories260K']);
  assert.equal(list.data[0].object, 'model');
  assert.equal(list.data[0].owned_by, 'mesh-llm');
  modelId = ids[0];
});
modelId ??= 'stories260K';

let solo = null;
await check('chat non-streaming', async () => {
  const r = await chat(story, { max_tokens: 40 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, modelId);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 40);
  solo = r;
});

await check('rendered prompt and usage.prompt_tokens', async () => {
  const t = await applyTemplate(story);
  assert.equal(t.prompt, chatml(story)); // stories260K has no template: ChatML
  assert.equal(solo.usage.prompt_tokens, t.tokens.length);
  // the server tokenizes with special-token parsing and the model's BOS rule
  const out = mesh(['tokenize', '--model', modelPath, '--parse-special'], t.prompt);
  if (out === null) {
    console.log('  (mesh-llm tokenize not built yet: compared with /apply-template only)');
    return;
  }
  const ids = out.trim().split(/[\s,\[\]]+/).filter((x) => x !== '').map(Number);
  assert.deepEqual(ids, t.tokens);
});

await check('chat streaming equals non-streaming', async () => {
  const s = await chatStream(story, { max_tokens: 40 });
  assert.equal(s.role, 'assistant');
  assert.equal(s.text, solo.choices[0].message.content);
  assert.equal(s.finish, solo.choices[0].finish_reason);
  assert.deepEqual(s.usage, solo.usage);
  assert.ok(s.chunks >= 3);
});

await check('no model field, no usage chunk unless asked, unicode round trip', async () => {
  const msgs = [{ role: 'system', content: 'Tell a story.' },
    { role: 'user', content: [{ type: 'text', text: 'Ünïcödé 日本 🙂 ' }, { type: 'text', text: 'and a cat' }] }];
  const r = await client.chat.completions.create({ messages: msgs, temperature: 0, max_tokens: 24 });
  assert.equal(r.model, modelId);
  const t = await applyTemplate([msgs[0], { role: 'user', content: 'Ünïcödé 日本 🙂 and a cat' }]);
  assert.equal(r.usage.prompt_tokens, t.tokens.length);
  const stream = await client.chat.completions.create({
    messages: msgs, temperature: 0, max_tokens: 24, stream: true,
  });
  let text = '';
  let usageSeen = false;
  for await (const c of stream) {
    if (c.usage) usageSeen = true;
    text += c.choices[0]?.delta?.content ?? '';
  }
  assert.equal(usageSeen, false);
  assert.equal(text, r.choices[0].message.content);
});

await check('max_tokens -> finish_reason length', async () => {
  const r = await chat(story, { max_tokens: 5 });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 5);
  const r2 = await chat(story, { max_completion_tokens: 3 });
  assert.equal(r2.usage.completion_tokens, 3);
});

await check('stop sequence is not in the output', async () => {
  const full = solo.choices[0].message.content;
  // a stop string from the middle of the greedy output
  const words = full.split(' ').filter((w) => w.length >= 2);
  const stop = words[Math.min(3, words.length - 1)];
  const cut = full.indexOf(stop);
  assert.ok(cut > 0, `stop '${stop}' in '${full}'`);
  const r = await chat(story, { max_tokens: 40, stop: [stop, 'zzzzqq'] });
  assert.equal(r.choices[0].message.content, full.slice(0, cut));
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await chatStream(story, { max_tokens: 40, stop });
  assert.equal(s.text, full.slice(0, cut));
  assert.ok(!s.text.includes(stop));
  assert.equal(s.finish, 'stop');
});

await check('completions (text_completion)', async () => {
  const r = await client.completions.create({
    model: modelId, prompt: 'Once upon a time', max_tokens: 12, temperature: 0,
  });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.usage.completion_tokens, 12);
  const stream = await client.completions.create({
    model: modelId, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true,
  });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

await check('seeded sampling is reproducible', async () => {
  const opts = { max_tokens: 30, temperature: 0.9, seed: 1234 };
  const a = await chat(story, opts);
  const b = await chat(story, opts);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
});

const prompts = [
  'Once upon a time', 'The little dog', 'Lily wanted to', 'One day, a boy',
  'The sun was', 'Tom and Sue', 'There was a big', 'A cat sat',
];
await check('8 concurrent streams equal their solo results', async () => {
  const msgs = prompts.map((p) => [{ role: 'user', content: p }]);
  const solos = [];
  for (const m of msgs) solos.push((await chat(m, { max_tokens: 48 })).choices[0].message.content);
  const conc = await Promise.all(msgs.map((m) => chatStream(m, { max_tokens: 48 })));
  conc.forEach((c, i) => {
    assert.equal(c.text, solos[i], `stream ${i}`);
    assert.ok(c.finish);
  });
});

await check('greedy chat equals `mesh-llm generate` on the rendered ids', async () => {
  const n = 32;
  const t = await applyTemplate(story);
  const r = await chat(story, { max_tokens: n });
  const out = mesh(['generate', '--model', modelPath, '--prompt-ids', t.tokens.join(','),
    '--temp', '0', '-n', String(n), '--ids']);
  if (out === null) {
    console.log('  (mesh-llm generate not built yet: skipped)');
    return;
  }
  const text = mesh(['generate', '--model', modelPath, '--prompt-ids', t.tokens.join(','),
    '--temp', '0', '-n', String(n)]);
  const ids = out.trim().split(/[\s,\[\]]+/).filter((x) => x !== '').map(Number);
  // generate does not print an end-of-generation token; the API counts it
  const eog = r.choices[0].finish_reason === 'stop' ? 1 : 0;
  assert.equal(r.usage.completion_tokens, ids.length + eog);
  const content = r.choices[0].message.content;
  assert.ok(text === content || text === content + '\n',
    `API: ${JSON.stringify(content)}\ngenerate: ${JSON.stringify(text)}`);
});

await check('errors through the client', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: story }),
    (e) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(
    client.chat.completions.create({ model: modelId, messages: story, temperature: 5 }),
    (e) => e.status === 400 && e.param === 'temperature');
  await assert.rejects(
    client.chat.completions.create({ model: modelId, messages: [] }),
    (e) => e.status === 400 && e.param === 'messages');
  // and the server still answers
  const r = await chat(story, { max_tokens: 2 });
  assert.equal(r.usage.completion_tokens, 2);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
