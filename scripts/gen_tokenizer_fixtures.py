#!/usr/bin/env python3
"""Generate the tokenizer and chat-template fixtures of `infer/tests/` from the reference tools.

Token ids, detokenized text, token pieces and end-of-generation sets come from llama.cpp through
llama-cpp-python; chat prompts come from Python jinja2 set up the way Hugging Face's
`apply_chat_template` sets it up. The fixtures are checked in, so CI needs none of this.

    pip install llama-cpp-python gguf jinja2
    scripts/fetch-models.sh --qwen
    python3 scripts/gen_tokenizer_fixtures.py [--models DIR] [--out infer/tests/fixtures]

Writes tokenizer_smollm2.json, tokenizer_qwen2.json (when the Qwen model is cached),
tokenizer_spm.json with the two small SentencePiece-vocabulary GGUF files spm_*.gguf that the SPM
tests load (llama.cpp tokenizes with them, so their ids are real llama.cpp ids too), and
tokenizer_pretok.json: SmolLM2's vocabulary under other pre-tokenizers (llama-bpe, gpt-2, ...).
"""

import argparse
import ctypes
import json
import os
import random
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path

try:
    import gguf
    import jinja2
    import jinja2.ext
    import jinja2.sandbox
    import llama_cpp
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(f"missing module ({exc}); run: pip install llama-cpp-python gguf jinja2")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = Path(os.environ.get("LLMSTREAM_MODELS", Path.home() / ".cache/llmstream/models"))

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
}

# Strings that exercise the pre-tokenizers, the merges, byte fallback and special tokens.
COMMON_CASES = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n\n",
    " \n",
    "\r\n",
    "a\r\nb\r\n\r\nc\rd",
    "Hello world",
    " Hello world",
    "Hello  world",
    "Hello   world   ",
    "   leading spaces",
    "trailing spaces   ",
    "\tindented\twith\ttabs\t\t",
    "mixed \t \n whitespace\u00a0nbsp\u3000ideographic\u2028sep",
    "line1\nline2\n\n  indented line\n\t\ttabbed\n",
    "    four spaces",
    "        eight spaces\n    four\n",
    "caf\u00e9 r\u00e9sum\u00e9 na\u00efve \u00c5ngstr\u00f6m",
    "e\u0301 combining acute, n\u0303, a\u0308\u0304, \u0301 alone",
    "\u00dcn\u00efc\u00f6d\u00e9 \u00c0\u00c9\u00ce\u00d5\u00dc \u00df \u1e9e",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u0e44\u0e17\u0e22",
    "emoji \U0001F600\U0001F603 \U0001F389",
    "family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 zwj",
    "flags \U0001F1FA\U0001F1F8\U0001F1EB\U0001F1F7\U0001F1EF\U0001F1F5",
    "skin \U0001F44D\U0001F3FD and \u2764\ufe0f variation",
    "\U0001D4D7\U0001D4EE\U0001D4F5\U0001D4F5\U0001D4F8 math letters",
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "12345678901234567890",
    "3.14159 2.5e-10 -42 +7",
    "1,000,000 and 1 000 000 and 1_000_000",
    "0x1F 0b1010 v1.2.3-beta",
    "\u0663\u0664\u0665 arabic digits \u0968\u0969 devanagari",
    "\u2460\u2461\u2462 \u00bd \u00b2 \u2167",
    "don't can't won't I'm you're we've they'll she'd it's",
    "DON'T CAN'T I'M YOU'RE WE'VE THEY'LL SHE'D IT'S",
    "Don'T 'S 'T 'Re 'vE 'M 'Ll 'D",
    "'s 't 're 've 'm 'll 'd",
    "rock 'n' roll ''quoted'' 'sup",
    "https://example.com/path/to?query=1&x=y#frag",
    "user.name+tag@example.co.uk",
    "C:\\Users\\name\\file.txt",
    "def f(x):\n    return x ** 2  # square\n",
    'fn main() {\n    println!("{}", 1 + 2);\n}\n',
    '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }\n',
    "const x = async () => { await fetch(`/api/${id}`); };",
    "SELECT * FROM users WHERE id = 1;",
    '<html><body><div class="a">x</div></body></html>',
    '{"key": [1, 2.5, true, null], "k2": {"a": "b"}}',
    "a\u200bb zero width, \u00ad soft hyphen",
    "\x1f\x1c\x07 control chars",
    "!!!???...,,,;;;",
    "--- *** ___ === +++",
    "$100 + 50% = <tag> | ^caret ~tilde `tick`",
    "\u2018curly\u2019 \u201cquotes\u201d \u2014 dash \u2026",
    "supercalifragilisticexpialidocious" * 8,
    "x" * 300,
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
]

SPECIAL_TOKENS = {
    "smollm2": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<reponame>"],
    "qwen2": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</s>", "[PAD151670]"],
}

SPECIAL_CASES = {
    "smollm2": [
        "<|im_start|>user\nHello<|im_end|>\n",
        "<|endoftext|>",
        "text<|endoftext|>more",
        "<|im_start|><|im_end|>",
        "<|im_start|",
        " <|im_end|> spaced ",
        "<repo_name>x<file_sep>y<reponame>",
    ],
    "qwen2": [
        "<|im_start|>system\nYou are helpful.<|im_end|>\n",
        "<|endoftext|>",
        "text<|endoftext|>more",
        "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
        "</s> end of sentence",
        "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
        "[PAD151665] unused",
        "<|im_start|",
    ],
}

CHAT_CASES = [
    {
        "name": "user_only",
        "messages": [{"role": "user", "content": "Hello!"}],
        "add_generation_prompt": True,
    },
    {
        "name": "system_user_assistant",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "no_generation_prompt",
        "messages": [
            {"role": "user", "content": "Write \"hi\" in Python."},
            {"role": "assistant", "content": "```python\nprint(\"hi\")\n```"},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "unicode_and_whitespace",
        "messages": [
            {"role": "user", "content": "  caf\u00e9 \u4f60\u597d \U0001F600\n\n\ttabs {{ not jinja }} {% raw %}"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "empty",
        "messages": [],
        "add_generation_prompt": True,
        "only": ["smollm2"],
    },
    {
        "name": "tools",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city, in \u00b0C",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        "add_generation_prompt": True,
    },
]


# Random strings over an alphabet of the characters the pre-tokenizers treat differently.
RANDOM_ALPHABET = (
    list("abcXYZ") * 3
    + list("0123456789") * 2
    + [" "] * 8
    + ["\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\x1f"]
    + list(".,!?;:'\"()[]{}<>/\\|$%^&*+-=_~`@#")
    + ["'s", "'T", "'re", "'LL", "'d", "'M", "'ve"]
    + ["\u00e9", "e\u0301", "\u00df", "\u0130", "\u03a9", "\u0436", "\u0661", "\u00bd", "\u00b2"]
    + ["\u4f60", "\u597d", "\u65e5", "\u3042", "\u30ab", "\ud55c", "\u0645", "\u0939\u093f"]
    + ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469", "\U0001F1FA\U0001F1F8", "\u2764\ufe0f"]
    + ["\u200b", "\u00ad", "\ufeff", "\U000E0001", "\U0010FFFD"]
)


def random_strings(seed, count, specials):
    rng = random.Random(seed)
    alphabet = RANDOM_ALPHABET + specials
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def hf_environment():
    """jinja2 set up as transformers' apply_chat_template does."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class Vocab:
    """The llama.cpp calls the fixtures need, through llama-cpp-python's C API."""

    def __init__(self, path):
        self.llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text, add_special, parse_special):
        data = text.encode("utf-8")
        cap = len(data) + 16
        while True:
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            cap = -n

    def detokenize(self, ids, remove_special, unparse_special):
        arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
        cap = 64 + 8 * len(ids)
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
            if n >= 0:
                return buf.raw[:n]
            cap = -n

    def piece(self, token, special):
        cap = 64
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, cap, 0, special)
            if n >= 0:
                return buf.raw[:n]
            cap = -n

    def special_ids(self):
        def opt(v):
            return None if v < 0 else v

        return {
            "bos": opt(llama_cpp.llama_vocab_bos(self.vocab)),
            "eos": opt(llama_cpp.llama_vocab_eos(self.vocab)),
            "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(self.vocab)),
            "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(self.vocab)),
            "eog": [i for i in range(self.n) if llama_cpp.llama_vocab_is_eog(self.vocab, i)],
        }


def fnv1a64(data, h=0xCBF29CE484222325):
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


PIECE_BLOCK = 4096


def piece_hashes(vocab, special):
    """FNV-1a 64 over (u32 LE length, bytes) of every piece, one hash per block of ids."""
    out = []
    for start in range(0, vocab.n, PIECE_BLOCK):
        h = 0xCBF29CE484222325
        for tok in range(start, min(start + PIECE_BLOCK, vocab.n)):
            p = vocab.piece(tok, special)
            h = fnv1a64(len(p).to_bytes(4, "little") + p, h)
        out.append(f"{h:016x}")
    return out


def text_or_hex(data):
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"hex": data.hex()}


def token_cases(vocab, texts):
    cases = []
    for text in texts:
        ids = vocab.tokenize(text, True, False)
        ids_special = vocab.tokenize(text, True, True)
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_special": ids_special,
                "decoded": text_or_hex(vocab.detokenize(ids, False, False)),
                "decoded_special": text_or_hex(vocab.detokenize(ids_special, False, True)),
                "decoded_remove_special": text_or_hex(vocab.detokenize(ids, True, False)),
            }
        )
    return cases


def chat_cases(env, template, bos, eos, model):
    out = []
    for case in CHAT_CASES:
        if "only" in case and model not in case["only"]:
            continue
        ctx = {
            "messages": case["messages"],
            "add_generation_prompt": case["add_generation_prompt"],
            "bos_token": bos,
            "eos_token": eos,
        }
        if "tools" in case:
            ctx["tools"] = case["tools"]
        rendered = env.from_string(template).render(**ctx)
        entry = {k: v for k, v in case.items() if k not in ("only", "tools")}
        if "tools" in case:
            # As text, so that readers keep the key order the template prints.
            entry["tools_json"] = json.dumps(case["tools"], ensure_ascii=False)
        entry["expected"] = rendered
        out.append(entry)
    return out


def model_fixture(name, path):
    vocab = Vocab(path)
    reader = gguf.GGUFReader(str(path))
    template = reader.fields["tokenizer.chat_template"].contents()
    info = vocab.special_ids()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    bos_text = tokens[info["bos"]] if info["bos"] is not None else ""
    eos_text = tokens[info["eos"]] if info["eos"] is not None else ""
    chats = chat_cases(hf_environment(), template, bos_text, eos_text, name)
    texts = COMMON_CASES + SPECIAL_CASES[name] + [c["expected"] for c in chats]
    return {
        "model_file": path.name,
        "generator": f"llama-cpp-python {llama_cpp.__version__}, jinja2 {jinja2.__version__}",
        "vocab_size": vocab.n,
        **info,
        "piece_block": PIECE_BLOCK,
        "piece_hashes": piece_hashes(vocab, False),
        "piece_hashes_special": piece_hashes(vocab, True),
        "cases": token_cases(vocab, texts),
        "random_cases": token_cases(vocab, random_strings(7, 150, SPECIAL_TOKENS[name])),
        "chat": chats,
    }


# A small SentencePiece ("llama") vocabulary: byte fallback tokens, control tokens, a user-defined
# token and pieces whose scores decide the merge order (two pairs tie on purpose).
SPM_PIECES = [
    ("\u2581", -1.0),
    ("\u2581t", -2.0),
    ("he", -2.5),
    ("\u2581the", -3.0),
    ("\u2581a", -3.5),
    ("in", -4.0),
    ("ing", -4.5),
    ("\u2581s", -5.0),
    ("\u2581w", -5.0),
    ("or", -5.5),
    ("ld", -5.5),
    ("orld", -6.0),
    ("\u2581world", -6.5),
    ("\u2581h", -7.0),
    ("ll", -7.5),
    ("ell", -8.0),
    ("ello", -8.5),
    ("\u2581hello", -9.0),
    ("er", -9.5),
    ("\u2581is", -10.0),
    ("\u2581\u2581", -10.5),
    ("\u2581\u2581\u2581\u2581", -11.0),
    ("\u00e9", -11.5),
    ("caf", -12.0),
    ("\u2581caf", -12.5),
    ("\u2581caf\u00e9", -13.0),
    ("\u4f60", -13.5),
    ("\u4f60\u597d", -14.0),
    ("\n", -14.5),
    ("<s", -15.0),
    ("an", -15.5),
    ("\u2581an", -16.0),
    ("\u2581and", -17.0),
] + [(c, -20.0 - i * 0.1) for i, c in enumerate("abcdefghijklmnopqrstuvwxyzTHW.,!?'")]

SPM_CASES = [
    "",
    " ",
    "the",
    "the world",
    "hello world",
    "Hello World",
    "  two leading spaces",
    "trailing  ",
    "sing and swing",
    "caf\u00e9 is \u4f60\u597d",
    "\u00e8 unknown accent",
    "\U0001F600 emoji falls back to bytes",
    "line one\nline two",
    "tab\there",
    "<s>the</s>",
    "<s",
    "a<tool>b</tool>c",
    "<tool> leading user token",
    "x <unk> y",
    "aaaa bbbb thethe",
]


def write_spm_gguf(path, add_space_prefix, add_bos, add_eos):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0] * len(tokens)
    types = [2, 3, 3] + [6] * 256
    for text, score in SPM_PIECES:
        tokens.append(text)
        scores.append(score)
        types.append(1)
    for text in ["<tool>", "</tool>"]:
        tokens.append(text)
        scores.append(0.0)
        types.append(4)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if add_eos is not None:
        w.add_add_eos_token(add_eos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_fixture(out):
    variants = {
        # llama.cpp defaults for a "llama" vocabulary: space prefix, BOS, no EOS.
        "spm_default.gguf": (None, None, None),
        "spm_noprefix_eos.gguf": (False, False, True),
    }
    result = {"generator": f"llama-cpp-python {llama_cpp.__version__}", "variants": []}
    for file_name, (prefix, bos, eos) in variants.items():
        path = out / file_name
        write_spm_gguf(path, prefix, bos, eos)
        vocab = Vocab(path)
        info = vocab.special_ids()
        pieces = [vocab.piece(t, False).hex() for t in range(vocab.n)]
        pieces_special = [vocab.piece(t, True).hex() for t in range(vocab.n)]
        result["variants"].append(
            {
                "model_file": file_name,
                "vocab_size": vocab.n,
                **info,
                "pieces_hex": pieces,
                "pieces_special_hex": pieces_special,
                "cases": token_cases(vocab, SPM_CASES),
            }
        )
    return result


# Pre-tokenizers without a model here: llama.cpp tokenizes with SmolLM2's vocabulary and merges
# under another `tokenizer.ggml.pre`; the tests build the same spec from SmolLM2's GGUF.
PRETOK_VARIANTS = ["llama-bpe", "gpt-2", None, "starcoder", "qwen2"]


def write_bpe_gguf(path, source, pre):
    fields = source.fields
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    w.add_tokenizer_model("gpt2")
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(fields["tokenizer.ggml.tokens"].contents())
    w.add_token_types(fields["tokenizer.ggml.token_type"].contents())
    w.add_token_merges(fields["tokenizer.ggml.merges"].contents())
    w.add_bos_token_id(fields["tokenizer.ggml.bos_token_id"].contents())
    w.add_eos_token_id(fields["tokenizer.ggml.eos_token_id"].contents())
    w.add_add_bos_token(fields["tokenizer.ggml.add_bos_token"].contents())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def pretok_fixture(smollm2_path, scratch):
    source = gguf.GGUFReader(str(smollm2_path))
    result = {
        "generator": f"llama-cpp-python {llama_cpp.__version__}",
        "vocabulary_of": smollm2_path.name,
        "variants": [],
    }
    for pre in PRETOK_VARIANTS:
        path = scratch / "pretok.gguf"
        write_bpe_gguf(path, source, pre)
        vocab = Vocab(path)
        cases = token_cases(vocab, COMMON_CASES + random_strings(11, 60, SPECIAL_TOKENS["smollm2"]))
        result["variants"].append({"pre": pre, **vocab.special_ids(), "cases": cases})
        del vocab
        path.unlink()
    return result


# Pre-tokenization probes: a vocabulary holding every substring of every probe (byte-level
# encoded), with a merge for every split of every token, turns each pre-tokenized word into
# exactly one token, so llama.cpp's ids show its word boundaries. The tests build the same
# vocabulary (256 byte chars, then the longer substrings by length, then text).
PROBES = [
    "1234567",
    "x=12345678",
    " 123 4567",
    "DON'T I'M",
    "it's 'RE 'll",
    "'s'S'd'LL",
    "a  b",
    "a \n b",
    "a\n\n  b",
    "a\r\n\tb \r",
    "  !! x",
    "hi!! $5 ",
    "x  \n",
    "\u00e9\u0301\u00f1 \u0661\u0662\u0663",
    "\u65e5\u672c \u8a9e",
    "\U0001F600 \U0001F44D\U0001F3FD",
    "a\u00a0 b\u3000c",
    "\tx\t\ty",
    "$+<=>^~|`",
    "12.5%,x",
    "a1b22c333",
    "\x1f \x1c\u2028x",
]


def byte_encoder():
    table = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out = {}
    extra = 0
    for b in range(256):
        if b in table:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def probe_vocabulary():
    enc = byte_encoder()
    base = [enc[b] for b in range(256)]
    longer = set()
    for probe in PROBES:
        e = "".join(enc[b] for b in probe.encode("utf-8"))
        for i in range(len(e)):
            for j in range(i + 2, len(e) + 1):
                longer.add(e[i:j])
    tokens = base + sorted(longer, key=lambda t: (len(t), t))
    merges = [f"{t[:k]} {t[k:]}" for t in tokens[256:] for k in range(1, len(t))]
    return tokens, merges


def write_probe_gguf(path, pre):
    tokens, merges = probe_vocabulary()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    w.add_tokenizer_model("gpt2")
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def probe_fixture(scratch):
    tokens, merges = probe_vocabulary()
    result = {
        "generator": f"llama-cpp-python {llama_cpp.__version__}",
        "probes": PROBES,
        "vocab_size": len(tokens),
        "merges": len(merges),
        "variants": [],
    }
    for pre in PRETOK_VARIANTS:
        path = scratch / "probe.gguf"
        write_probe_gguf(path, pre)
        vocab = Vocab(path)
        words = [[tokens[i] for i in vocab.tokenize(p, False, False)] for p in PROBES]
        ids = [vocab.tokenize(p, False, False) for p in PROBES]
        result["variants"].append({"pre": pre, "ids": ids, "words_byte_encoded": words})
        del vocab
        path.unlink()
    return result


def dump(path, data):
    text = json.dumps(data, ensure_ascii=False, indent=1)
    # Integer arrays (ids) on one line each.
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model cache directory")
    ap.add_argument("--out", type=Path, default=REPO / "infer/tests/fixtures", help="output directory")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    for name, file_name in MODELS.items():
        path = args.models / file_name
        if not path.is_file():
            print(f"skipping {name}: {path} not found (run scripts/fetch-models.sh --qwen)")
            continue
        dump(args.out / f"tokenizer_{name}.json", model_fixture(name, path))
    dump(args.out / "tokenizer_spm.json", spm_fixture(args.out))
    smollm2 = args.models / MODELS["smollm2"]
    if smollm2.is_file():
        with tempfile.TemporaryDirectory() as scratch:
            dump(args.out / "tokenizer_pretok.json", pretok_fixture(smollm2, Path(scratch)))
    with tempfile.TemporaryDirectory() as scratch:
        dump(args.out / "tokenizer_probe.json", probe_fixture(Path(scratch)))


if __name__ == "__main__":
    main()
