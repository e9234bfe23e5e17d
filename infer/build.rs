//! Enables the AVX-512 quant kernels (`cfg(llmstream_avx512)`) on compilers whose `std::arch`
//! has the AVX-512 intrinsics stable (Rust 1.89 and later); older compilers build the AVX2
//! kernels only.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(llmstream_avx512)");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            // "rustc 1.95.0 (...)"
            let version = v.split_whitespace().nth(1)?.to_owned();
            let mut parts = version.split('.');
            let major = parts.next()?.parse::<u32>().ok()?;
            let minor = parts.next()?.parse::<u32>().ok()?;
            Some((major, minor))
        });
    if minor.is_some_and(|(major, minor)| major > 1 || minor >= 89) {
        println!("cargo::rustc-cfg=llmstream_avx512");
    }
}
