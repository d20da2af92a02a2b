// Serving benchmark over the OpenAI API: aggregate generation tokens/s with
// 1, 2, 4 and 8 concurrent streaming requests, time to first token, and the
// single-stream decode rate seen by a client. Plain fetch + SSE parsing (no
// client library in the timing path). Run by bench/serve.sh.
// Env: BASE_URL (http://127.0.0.1:PORT), N_TOKENS, REPS, LEVELS ("1,2,4,8").
const base = process.env.BASE_URL;
const nTokens = Number(process.env.N_TOKENS || 256);
const reps = Number(process.env.REPS || 5);
const levels = (process.env.LEVELS || '1,2,4,8').split(',').map(Number);
const prompts = [
  'Once upon a time', 'The little dog', 'Lily wanted to', 'One day, a boy',
  'The sun was', 'Tom and Sue', 'There was a big', 'A cat sat',
];

// One streaming completion; returns timings (ms) and the token count.
async function one(prompt) {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt, max_tokens: nTokens, temperature: 0, stream: true, ignore_eos: true,
      stream_options: { include_usage: true },
    }),
  });
  if (r.status !== 200) throw new Error(`status ${r.status}: ${await r.text()}`);
  const dec = new TextDecoder();
  let buf = '';
  let first = null;
  let last = null;
  let usage = null;
  for await (const chunk of r.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.usage) usage = j.usage;
      if (j.choices?.length && j.choices[0].text) {
        const now = performance.now();
        if (first === null) first = now;
        last = now;
      }
    }
  }
  const t1 = performance.now();
  return { ttft: first - t0, total: t1 - t0, decode: last - first, n: usage.completion_tokens };
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const spread = (a) => `${Math.min(...a).toFixed(0)}-${Math.max(...a).toFixed(0)}`;

await one(prompts[0]); // warm-up
const results = {};
for (const c of levels) {
  const agg = [];
  const ttft = [];
  const dec = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    const outs = await Promise.all(Array.from({ length: c }, (_, i) => one(prompts[i % prompts.length])));
    const wall = (performance.now() - t0) / 1000;
    agg.push(outs.reduce((s, o) => s + o.n, 0) / wall);
    for (const o of outs) {
      ttft.push(o.ttft);
      dec.push((o.n - 1) / (o.decode / 1000));
    }
  }
  results[c] = { agg: median(agg), ttft: median(ttft), dec: median(dec) };
  console.log(`streams ${c}: aggregate ${median(agg).toFixed(0)} tokens/s (spread ${spread(agg)}), ` +
    `per stream ${median(dec).toFixed(0)} tokens/s, time to first token ${median(ttft).toFixed(1)} ms`);
}
console.log(JSON.stringify({ bench: 'serve', n_tokens: nTokens, reps, results }));
