// Stress for the API: many concurrent requests (chat and completions,
// streaming or not), a third of them aborted by the client at a random
// moment, some malformed. Afterwards every slot must be free: a burst of
// --parallel requests all succeed at once. Env: BASE_URL, N (default 60).
const base = process.env.BASE_URL;
const n = Number(process.env.N || 60);
let rng = 12345;
const rand = () => ((rng = (rng * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);

async function one(i) {
  const ctrl = new AbortController();
  const abort = rand() < 0.33;
  const stream = rand() < 0.5;
  const chat = rand() < 0.5;
  const bad = rand() < 0.1;
  if (abort) setTimeout(() => ctrl.abort(), Math.floor(rand() * 80));
  const body = bad ? '{"messages": [' : JSON.stringify(chat
    ? { messages: [{ role: 'user', content: `Story ${i}` }], max_tokens: 64 + (i % 64), stream }
    : { prompt: `Once ${i}`, max_tokens: 64 + (i % 64), stream });
  try {
    const r = await fetch(`${base}/v1/${chat ? 'chat/completions' : 'completions'}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: ctrl.signal,
    });
    const text = await r.text();
    if (bad) return r.status === 400 ? 'ok' : `bad request got ${r.status}`;
    if (r.status === 503) return 'busy';
    if (r.status !== 200) return `status ${r.status}: ${text.slice(0, 200)}`;
    if (stream && !text.endsWith('data: [DONE]\n\n')) return `stream not terminated: ${text.slice(-100)}`;
    return 'ok';
  } catch (e) {
    return abort ? 'aborted' : `error ${e}`;
  }
}

const results = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
const counts = {};
for (const r of results) counts[r] = (counts[r] || 0) + 1;
console.log(JSON.stringify(counts));
const bad = results.filter((r) => !['ok', 'busy', 'aborted'].includes(r));
// all slots free again: a burst of parallel requests succeeds
await new Promise((r) => setTimeout(r, 300));
const burst = await Promise.all(Array.from({ length: 4 }, () => fetch(`${base}/v1/completions`, {
  method: 'POST', body: JSON.stringify({ prompt: 'Once', max_tokens: 4 }),
}).then((r) => r.status)));
if (bad.length || burst.some((s) => s !== 200)) {
  console.log('FAIL', bad.slice(0, 5), burst);
  process.exit(1);
}
console.log('ok   stress: all requests handled, slots free afterwards');
