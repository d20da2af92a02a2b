#!/usr/bin/env node
// Prints the mesh-llm vs llama.cpp table from the JSON lines bench/compare.sh
// collects (mesh-llm bench lines tagged engine "mesh-llm", bench.mjs lines
// tagged engine "llama.cpp", both tagged with model and type).
//
// ratio = mesh-llm t/s / llama.cpp t/s (> 1: mesh-llm faster).
// roofline (tg only) = t/s * weight bytes / read bandwidth, with the bandwidth
// measured by `mesh-llm bench --membw` at the same thread count just before
// that model's run, and mesh-llm's weight byte count for both engines so the
// two fractions are directly comparable (llama.cpp's own count is
// llama_model_size, which can differ by the F32 norm vectors).
import { readFileSync } from "node:fs";

const file = process.argv[2];
if (!file) {
	process.stderr.write("usage: node bench/llamacpp/table.mjs RESULTS.jsonl\n");
	process.exit(2);
}
const lines = readFileSync(file, "utf8").split("\n").filter((l) => l.trim().startsWith("{"));
const recs = [];
for (const l of lines) {
	try {
		recs.push(JSON.parse(l));
	} catch {
		process.stderr.write(`table.mjs: skipping a line that is not JSON: ${l.slice(0, 80)}\n`);
	}
}
const run = recs.find((r) => r.test === "run");
const end = recs.find((r) => r.test === "run_end");
const llinfo = recs.find((r) => r.test === "info" && r.engine === "llama.cpp");

const key = (r) => `${r.model}|${r.test}|${r.threads}`;
const rows = new Map();
const membw = new Map(); // model|threads -> GB/s
const wbytes = new Map(); // model -> bytes (mesh-llm's count preferred)
for (const r of recs) {
	if (!r.model || r.test === "info")
		continue;
	if (r.test === "membw") {
		membw.set(`${r.model}|${r.threads}`, r.gb_per_s);
		continue;
	}
	if (!/^(pp|tg)\d+$/.test(r.test))
		continue;
	if (r.weight_bytes && (r.engine === "mesh-llm" || !wbytes.has(r.model)))
		wbytes.set(r.model, r.weight_bytes);
	if (!rows.has(key(r)))
		rows.set(key(r), { model: r.model, test: r.test, threads: r.threads });
	rows.get(key(r))[r.engine === "mesh-llm" ? "mesh" : "llama"] = r;
}

const f = (x, d = 2) => (x === undefined || x === null || Number.isNaN(x) ? "-" : x.toFixed(d));
const ts = (r) => (r ? `${f(r.tokens_per_s)} ± ${f(r.stddev)}` : "-");
const out = [];
if (run)
	out.push(`${run.date}  git ${run.git}  ${run.cpu}  (${run.nproc} cpus; ${run.flags})`,
		`load average at start ${run.loadavg_start}${end ? `, at end ${end.loadavg_end}` : ""}; ` +
		`-p ${run.p} -n ${run.n}, ${run.reps} reps after 1 warm-up; ` +
		`llama.cpp: KV ${run.llamacpp_kv}, flash attn ${run.llamacpp_fa}` +
		(llinfo ? `, node-llama-cpp ${llinfo.node_llama_cpp} (llama.cpp ${llinfo.llama_cpp_release?.release})` : ""), "");
out.push("| model | test | threads | mesh-llm t/s | llama.cpp t/s | ratio | tg GB/s (membw) | tg roofline mesh-llm | tg roofline llama.cpp |");
out.push("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const r of rows.values()) {
	const ratio = r.mesh && r.llama ? r.mesh.tokens_per_s / r.llama.tokens_per_s : undefined;
	let bw = "-", rm = "-", rl = "-";
	if (r.test.startsWith("tg")) {
		const m = membw.get(`${r.model}|${r.threads}`);
		const wb = wbytes.get(r.model);
		if (m && wb) {
			bw = f(m, 1);
			if (r.mesh)
				rm = f(r.mesh.tokens_per_s * wb / 1e9 / m, 3);
			if (r.llama)
				rl = f(r.llama.tokens_per_s * wb / 1e9 / m, 3);
		}
	}
	out.push(`| ${r.model} | ${r.test} | ${r.threads} | ${ts(r.mesh)} | ${ts(r.llama)} | ${f(ratio)} | ${bw} | ${rm} | ${rl} |`);
}
process.stdout.write(out.join("\n") + "\n");
