//! Turns the bundled `.tiktoken` rank files into a compact binary form at build time, so that
//! loading a built-in encoding costs a table build and no base64 decoding or text parsing.
//!
//! Layout of `<name>.bin` (little endian): `n: u32`, `ranks: [u32; n]`, `offsets: [u32; n + 1]`,
//! then the concatenated token bytes. Every file's SHA-256 is checked against `SHA256SUMS`.
//! `<name>.chars.bin` holds the vocabulary's character analysis (`char_masks::to_bytes`), so that
//! merges start from whole characters without a first-use cost.
use base64::Engine;
use std::collections::HashMap;

// The character analysis of `bytepair_core::chars`, precomputed here for the bundled files.
#[allow(dead_code)]
#[path = "src/char_masks.rs"]
mod char_masks;
use sha2::{Digest, Sha256};
use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("vocab");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=vocab");
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).expect("vocab/SHA256SUMS");
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (hash, file) = (it.next().unwrap(), it.next().unwrap());
        let data = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("vocab/{file}: {e}"));
        let got = format!("{:x}", Sha256::digest(&data));
        assert_eq!(got, hash, "vocab/{file}: SHA-256 mismatch with SHA256SUMS");
        let name = file.trim_end_matches(".tiktoken");
        let mut ranks = Vec::new();
        let mut offsets = vec![0u32];
        let mut bytes = Vec::new();
        for (i, l) in data.split(|&b| b == b'\n').enumerate() {
            if l.is_empty() {
                continue;
            }
            let sp = l
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or_else(|| panic!("{file}:{}", i + 1));
            let tok = base64::engine::general_purpose::STANDARD
                .decode(&l[..sp])
                .unwrap();
            let rank: u32 = std::str::from_utf8(&l[sp + 1..])
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            ranks.push(rank);
            bytes.extend_from_slice(&tok);
            offsets.push(bytes.len() as u32);
        }
        let mut blob = Vec::with_capacity(4 + ranks.len() * 8 + bytes.len() + 4);
        blob.extend_from_slice(&(ranks.len() as u32).to_le_bytes());
        for r in &ranks {
            blob.extend_from_slice(&r.to_le_bytes());
        }
        for o in &offsets {
            blob.extend_from_slice(&o.to_le_bytes());
        }
        blob.extend_from_slice(&bytes);
        fs::write(out.join(format!("{name}.bin")), blob).unwrap();
        let tokens: Vec<(&[u8], u32)> = (0..ranks.len())
            .map(|i| {
                (
                    &bytes[offsets[i] as usize..offsets[i + 1] as usize],
                    ranks[i],
                )
            })
            .collect();
        let by_bytes: HashMap<&[u8], u32> = tokens.iter().copied().collect();
        let units = char_masks::char_masks(tokens.iter().copied(), |b| by_bytes.get(b).copied());
        fs::write(
            out.join(format!("{name}.chars.bin")),
            char_masks::to_bytes(&units),
        )
        .unwrap();
    }
}
