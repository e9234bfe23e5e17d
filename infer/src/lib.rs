//! Reference inference (Llama, Qwen2 on GGUF) on top of libllmstream.

pub mod chat;
pub mod tokenizer;
