// QA: compares mesh-llm's tokenizer with llama.cpp's (vocab-only load) on extra strings.
// usage: node bench/llamacpp/qa_tok.mjs MESH_BIN VOCAB.gguf...
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { ensureInstalled } from "./lib.mjs";
ensureInstalled();
const nlc = await import("node-llama-cpp");
const llama = await nlc.getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
	logLevel: nlc.LlamaLogLevel.error });
const [mesh, ...files] = process.argv.slice(2);
const S = [
	"Hello world", " Hello world", "  leading two", "trailing   ", "\t\ttabs\tand  spaces", "a\n\nb\n\n\nc", "\r\n windows\r\nline",
	"    Hello\n    Hello", "     ", "\n", " \n \n", "x  \n  y",
	"héllo wörld ñ ç", "e\u0301 (NFD) vs \u00e9", "日本語のテキスト、中文文本。", "한국어 텍스트", "Привет, мир!", "مرحبا بالعالم", "हिन्दी पाठ",
	"emoji 🦙🚀👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷", "\u00a0nbsp\u00a0here", "ideo\u3000space", "zero\u200bwidth\u200djoin", "ﬁ ligature", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
	"int main(void) {\n\treturn 0;\n}\n", "def f(x):\n    return x**2  # comment\n", "if (a != b && c >= 10) { x += 1; }", "<div class=\"x\">&amp;</div>",
	"1234567890 3.14159 1,000,000 0x1F 2024-11-25", "I'm you're he'll we'd it's THEY'RE I'M", "don't DON'T Don't", "!!!??? ... --- ***",
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "supercalifragilisticexpialidocious",
	"<s>", "</s>", "<unk>", "<s> hello </s>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "text<|endoftext|>more",
	"[INST] hi [/INST]", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", "<|endoftext|><|endoftext|>", " <|im_end|> ", "<|im_start|", "<|user|>\nhi<|end|>",
	"<fim_prefix>a<fim_suffix>b<fim_middle>", "\u0000nul", "tab\u000bvt\u000cff", "\u2028line sep\u2029para",
	"The quick brown fox jumps over the lazy dog.",
	"12345678901234567890", "x=1234567;y=89", "3.14e-10 and 6.02E+23", "١٢٣٤ ٥٦ ໑໒໓", "Ⅻ ½ ² ⑳",
	"I’m can’t", "It's 'quoted' and \"double\"", "'s 't 're 've 'm 'll 'd", "'S 'T 'RE",
	"  \n\n  \t\n ", "\n\n\n\n", "a \n b", "\t\t\t", "\r\r\n\n", "end with space ", " ",
	"Hello,world!How are you?I'm fine.", "snake_case camelCase PascalCase kebab-case", "https://example.com/a?b=c&d=e#f",
	"email@example.com @user #tag $100 %50 ^_^ ~/.bashrc", "a\u00e9\u00e8\u00ea\u00eb", "\u00c5ngstr\u00f6m caf\u00e9 na\u00efve",
	"Ελληνικά κείμενο", "עברית טקסט", "ไทย ภาษา", "Tiếng Việt có dấu", "ქართული", "𠀀𠀁 CJK ext B",
	"  Hello", "   Hello", "    Hello", "\tHello", "Hello  ", "Hello\n", "<|im_start|><|im_start|>", "<|im_start|> <|im_end|>",
	"<s><s></s>", "<unk><unk>", "[CLS] [SEP] [MASK] [PAD] [UNK]", "<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>", "<|endoftext|>\n<|endoftext|>",
	"▁already▁escaped ▁", "<0x41> <0xE2>", "\u00ff\u00fe\u0100", "ＡＢＣ　全角", "\ud83c\udff3\ufe0f\u200d\ud83c\udf08", "ÀÁÂÃÄÅ àáâãäå", "Ω≈ç√∫˜µ≤≥÷", "😀", "🦙", "a😀b", " 😀", "  😀  ",
];
// QA_TOK_RANDOM=N adds N random strings (fixed seed) glued from special-token
// texts, partial specials, whitespace runs and multi-byte characters.
{
	const parts = ["<|im_start|>", "<|im_end|>", "</s>", "<s>", "<|endoftext|>", "<unk>", "[CLS]", "[SEP]", "<|user|>",
		"<|end|>", "<|", "|>", "<", ">", "\n", " ", "  ", "\t", "\r\n", "\u2581", "🦙", "हि", "e\u0301", "123456", "'s",
		"abc", "Hello", " world", "日本", "<0x41>", "<mask>", "[MASK]", "<|fim_prefix|>", "<|eot_id|>"];
	let x = 12345;
	const rnd = (n) => { x = (x * 1103515245 + 12345) % 2147483648; return x % n; };
	for (let i = 0; i < Number(process.env.QA_TOK_RANDOM ?? 0); i++) {
		let t = "";
		for (let k = 1 + rnd(12); k > 0; k--) t += parts[rnd(parts.length)];
		S.push(t);
	}
}
let bad = 0, total = 0;
for (const f of files) {
	let model;
	try {
		model = await llama.loadModel({ modelPath: f, vocabOnly: true });
	} catch (e) { console.log(`${f}: llama.cpp cannot load: ${e.message}`); continue; }
	let fbad = 0;
	for (const s of S) for (const sp of [false, true]) {
		total++;
		const ref = Array.from(model._model.tokenize(s, sp));
		writeFileSync("/tmp/qa/tok/in.txt", s);
		let ours;
		try {
			ours = execFileSync(mesh, ["tokenize", "--model", f, "--no-bos", "--file", "/tmp/qa/tok/in.txt", ...(sp ? ["--parse-special"] : [])],
				{ encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim().split(/\s+/).filter((x) => x !== "").map(Number);
		} catch (e) { ours = `ERROR rc=${e.status} ${String(e.stderr).trim().slice(0, 200)}`; }
		if (JSON.stringify(ours) !== JSON.stringify(ref)) {
			bad++; fbad++;
			console.log(`${f.split("/").pop()} sp=${sp} ${JSON.stringify(s)}\n   llama.cpp: ${JSON.stringify(ref)}\n   mesh-llm : ${JSON.stringify(ours)}`);
		}
	}
	console.log(`## ${f.split("/").pop()}: ${fbad} mismatches of ${S.length * 2}`);
	await model.dispose();
}
console.log(`TOTAL ${bad} mismatches of ${total}`);
