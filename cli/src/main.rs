//! `llmstream`: inspect models, measure the data path, run models.

mod bench;
mod bench_cpu;
mod bench_daemon;
mod calibrate;
mod common;
mod doctor;
mod inspect;
mod run;
mod status;
mod synth;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "llmstream",
    version,
    about = "Stream model weights from NVMe to GPU or host memory, and run models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the GGUF model map: header, metadata, tensors, layers.
    Inspect(inspect::InspectArgs),
    /// Generate text from a prompt (greedy with --temp 0).
    Run(run::RunArgs),
    /// Talk with a model using its chat template.
    Chat(run::ChatArgs),
    /// Print the token ids of a text.
    Tokenize(run::TokenizeArgs),
    /// Measure storage → staging → device rates against buffered read, mmap and the driver's peak.
    Bench(bench::BenchArgs),
    /// Measure the CPU engine's quantized matrix-vector products: GB/s of weights per type.
    BenchCpu(bench_cpu::BenchCpuArgs),
    /// Measure the rates the hybrid GPU/CPU split is planned from and cache them for this
    /// machine (--show prints the cache).
    Calibrate(calibrate::CalibrateArgs),
    /// Check what this machine allows on the data path and which path llmstream takes.
    Doctor(doctor::DoctorArgs),
    /// Write a synthetic GGUF model: real shapes and tokenizer, random weights.
    Synth(synth::SynthArgs),
    /// Print the state of the llmstreamd daemon: clients, models, shared tier, bytes, errors.
    Status(status::StatusArgs),
}

fn main() -> ExitCode {
    // `llmstream ... | head` closes stdout early: end quietly as other command-line tools do,
    // instead of the default Rust behaviour of a panic on the next print.
    // SAFETY: restores the default disposition of one signal before any thread exists; no
    // handler of ours is replaced.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    common::init_tracing();
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchCpu(a) => bench_cpu::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Run(a) => run::run(a),
        Command::Chat(a) => run::chat(a),
        Command::Tokenize(a) => run::tokenize(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Status(a) => status::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", common::chain(&e));
            ExitCode::from(2)
        }
    }
}
