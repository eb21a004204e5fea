//! The tests' FFmpeg 9; shared with the benches (`#[path]`).

use std::path::PathBuf;

/// FFmpeg 9 (WHIP, SRT, HEVC, AV1), from the tests' virtualenv: the static
/// build of the `imageio-ffmpeg` PyPI package, which the README's test
/// command installs. Missing, the test fails; it does not skip.
pub fn ffmpeg9() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/.venv/bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run the README's test command (it installs tests/python/requirements.txt)", python.display()));
    assert!(
        out.status.success(),
        "imageio-ffmpeg missing from tests/python/.venv (the README's test command installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
