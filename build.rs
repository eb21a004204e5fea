//! Checks the hand-written libsrt bindings (src/ingest/srt/ffi.rs) against
//! the installed headers, and links libsrt.

fn main() {
    let check = "src/ingest/srt/abi.c";
    println!("cargo:rerun-if-changed={check}");
    println!("cargo:rerun-if-changed=build.rs");
    if !std::path::Path::new("/usr/include/srt/srt.h").exists()
        && std::env::var_os("STREAMD_SRT_INCLUDE").is_none()
    {
        panic!(
            "libsrt's headers are missing: install Debian's libsrt-openssl-dev \
             (scripts/lib.sh install_runtime_deps does), or set STREAMD_SRT_INCLUDE"
        );
    }
    let mut build = cc::Build::new();
    if let Some(dir) = std::env::var_os("STREAMD_SRT_INCLUDE") {
        build.include(dir);
    }
    // Compiled for its static assertions only: nothing is linked from it.
    build
        .file(check)
        .cargo_metadata(false)
        .flag("-Werror=incompatible-pointer-types")
        .flag("-Wno-unused")
        .try_compile("streamd_srt_abi_check")
        .unwrap_or_else(|e| panic!("libsrt's ABI does not match src/ingest/srt/ffi.rs: {e}"));
    println!("cargo:rerun-if-env-changed=STREAMD_SRT_INCLUDE");
    println!("cargo:rustc-link-lib=dylib=srt");
}
