//! Builds the container init (`init/init.c`) as a static binary that the linux backend
//! embeds and bind-mounts into every container as its pid 1.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/init.c");
    println!("cargo:rerun-if-env-changed=CC");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("corral-init");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        // Only the linux backend uses the init; other targets get an empty placeholder
        // so the crate still builds.
        std::fs::write(&out, b"").expect("writing the placeholder init");
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg("init/init.c")
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "building the container init with `{cc} -static` failed ({status}); \
             it needs a C compiler and a static libc (Debian: gcc and libc6-dev)"
        ),
        Err(e) => panic!(
            "running `{cc}` to build the container init: {e}; \
             it needs a C compiler and a static libc (Debian: gcc and libc6-dev)"
        ),
    }
}
