#!/usr/bin/env node
// Compares two reference-output JSON files with refdata's field names (e.g.
// ref.mjs output against /work/shared/refdata/<model>.json, or ref.mjs output
// against the same prompts run through mesh-llm): per prompt, the largest
// difference of the top-10 last-position logits (matched by id), whether the
// top-10 ids agree, and how many greedy tokens agree before the first
// difference (and the smallest greedy top-2 margin within that prefix).
// Prints one line per prompt; exit status 1 if a prompt's ids differ.
import { readFileSync } from "node:fs";

const [a, b] = process.argv.slice(2);
if (!a || !b) {
	process.stderr.write("usage: node bench/llamacpp/cmp_ref.mjs OURS.json REFERENCE.json\n");
	process.exit(2);
}
const A = JSON.parse(readFileSync(a, "utf8"));
const B = JSON.parse(readFileSync(b, "utf8"));
let bad = 0;
for (const pa of A.prompts) {
	const pb = B.prompts.find((p) => p.name === pa.name) ??
		B.prompts.find((p) => JSON.stringify(p.ids) === JSON.stringify(pa.ids));
	if (!pb || JSON.stringify(pb.ids) !== JSON.stringify(pa.ids)) {
		console.log(`${pa.name}: no prompt with the same ids in ${b}`);
		bad = 1;
		continue;
	}
	const mb = new Map(pb.top10_last.map(([i, v]) => [i, v]));
	let maxd = 0, missing = 0;
	for (const [i, v] of pa.top10_last) {
		if (mb.has(i))
			maxd = Math.max(maxd, Math.abs(v - mb.get(i)));
		else
			missing++;
	}
	const sameOrder = pa.top10_last.every(([i], k) => pb.top10_last[k][0] === i);
	let pre = 0;
	const n = Math.min(pa.greedy_ids.length, pb.greedy_ids.length);
	while (pre < n && pa.greedy_ids[pre] === pb.greedy_ids[pre])
		pre++;
	const margins = pb.greedy_top2_margin ? pb.greedy_top2_margin.slice(0, Math.min(pre + 1, n)) : [];
	const minMargin = margins.length ? Math.min(...margins) : NaN;
	console.log(`${pa.name}: top10 max|diff| ${maxd.toExponential(2)}, ids ${sameOrder ? "same order" : missing ? `${missing} not in the other top-10` : "same set, other order"}, ` +
		`greedy ${pre}/${n} identical${pre < n ? ` (reference margin at step ${pre}: ${pb.greedy_top2_margin?.[pre]})` : ""}` +
		(Number.isFinite(minMargin) ? `, min reference margin over steps 0..${Math.min(pre, n - 1)}: ${minMargin}` : ""));
}
process.exit(bad);
