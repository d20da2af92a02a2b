// The official `openai` npm client through a mesh: the same greedy chat
// completion, streamed, from the serving node directly (DIRECT_URL) and
// through another node that tunnels it over QUIC (MESH_URL), must give the
// same text. Prints one JSON line with the texts, chunk counts and timings;
// exits 1 when they differ. Used by test_mesh_serve.sh and bench/mesh_bench.sh.
// Env: DIRECT_URL, MESH_URL (http://127.0.0.1:PORT/v1), MODEL (default
// stories260K), MAX_TOKENS (default 40), RUNS (default 1).
import OpenAI from 'openai';

const model = process.env.MODEL || 'stories260K';
const maxTokens = Number(process.env.MAX_TOKENS || 40);
const runs = Number(process.env.RUNS || 1);
const messages = [
  { role: 'system', content: 'You tell short stories.' },
  { role: 'user', content: 'Once upon a time there was a little dog' },
];

async function streamOnce(baseURL) {
  const client = new OpenAI({ baseURL, apiKey: 'mesh', maxRetries: 0, timeout: 60000 });
  const t0 = performance.now();
  let ttft = null;
  let text = '';
  let chunks = 0;
  let finish = null;
  const stream = await client.chat.completions.create({
    model, messages, temperature: 0, max_tokens: maxTokens, stream: true,
    stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const ch = c.choices && c.choices[0];
    if (!ch) continue;
    if (ch.delta && ch.delta.content) {
      if (ttft === null) ttft = performance.now() - t0;
      text += ch.delta.content;
      chunks++;
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  const total = performance.now() - t0;
  const n = usage ? usage.completion_tokens : chunks;
  const gen = total - (ttft ?? 0);
  return { text, chunks, finish, ttft_ms: ttft, total_ms: total, tokens: n,
           tok_s: gen > 0 && n > 1 ? ((n - 1) * 1000) / gen : null };
}

async function plain(baseURL) {
  const client = new OpenAI({ baseURL, apiKey: 'mesh', maxRetries: 0, timeout: 60000 });
  const r = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: maxTokens });
  return r.choices[0].message.content;
}

const out = { direct: [], mesh: [] };
for (let i = 0; i < runs; i++) {
  out.direct.push(await streamOnce(process.env.DIRECT_URL));
  out.mesh.push(await streamOnce(process.env.MESH_URL));
}
out.plain_direct = await plain(process.env.DIRECT_URL);
out.plain_mesh = await plain(process.env.MESH_URL);
let ok = true;
for (let i = 0; i < runs; i++) {
  if (out.direct[i].text !== out.mesh[i].text || !out.mesh[i].text) ok = false;
  if (out.mesh[i].chunks < 2) ok = false; // token by token, not one blob
}
if (out.plain_direct !== out.plain_mesh || out.plain_mesh !== out.direct[0].text) ok = false;
out.ok = ok;
console.log(JSON.stringify(out));
process.exit(ok ? 0 : 1);
