//! Reference parsing as a table: input, default registry, and the parsed form or error.

use super::*;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn check(input: &str, expect: &str) {
    let got = match Reference::parse(input, DOCKER_HUB) {
        Ok(r) => r.to_string(),
        Err(e) => format!("error: {}", e.problem),
    };
    assert_eq!(got, expect, "input: {input:?}");
}

#[test]
fn valid_references() {
    let with_digest = format!("docker://127.0.0.1:5000/test/busybox@{D}");
    let tag_and_digest = format!("redis:7@{D}");
    let cases: &[(&str, String)] = &[
        ("redis", "docker://docker.io/library/redis:latest".into()),
        ("redis:7", "docker://docker.io/library/redis:7".into()),
        (
            "library/redis",
            "docker://docker.io/library/redis:latest".into(),
        ),
        (
            "bitnami/redis:7.2-debian",
            "docker://docker.io/bitnami/redis:7.2-debian".into(),
        ),
        (
            "docker:///redis",
            "docker://docker.io/library/redis:latest".into(),
        ),
        (
            "docker://library/redis:7",
            "docker://docker.io/library/redis:7".into(),
        ),
        (
            "docker://127.0.0.1:5000/test/busybox-httpd:1",
            "docker://127.0.0.1:5000/test/busybox-httpd:1".into(),
        ),
        ("docker://localhost/a", "docker://localhost/a:latest".into()),
        (
            "localhost:5000/a/b/c",
            "docker://localhost:5000/a/b/c:latest".into(),
        ),
        (
            "ghcr.io/owner/app_x__y.z--w:v1.0_rc-1",
            "docker://ghcr.io/owner/app_x__y.z--w:v1.0_rc-1".into(),
        ),
        (
            &with_digest,
            format!("docker://127.0.0.1:5000/test/busybox@{D}"),
        ),
        (
            &tag_and_digest,
            format!("docker://docker.io/library/redis:7@{D}"),
        ),
    ];
    for (input, expect) in cases {
        check(input, expect);
    }
}

#[test]
fn hostile_references() {
    let long = "a".repeat(600);
    let long_repo = format!("docker://r.io/{}", "a/".repeat(130).trim_end_matches('/'));
    let long_tag = format!("redis:{}", "t".repeat(129));
    let cases: &[(&str, &str)] = &[
        ("", "error: it is empty"),
        (&long, "error: it is 600 bytes long, more than 512"),
        (
            "http://r.io/a",
            "error: scheme `http` is not supported (use `docker://` or a short name)",
        ),
        ("docker:///", "error: the repository is empty"),
        ("/redis", "error: the registry host is empty"),
        ("docker://r.io/", "error: the repository is empty"),
        (
            "docker://r..io/a",
            "error: registry host `r..io` is not a valid host name",
        ),
        (
            "docker://-r.io/a",
            "error: registry host `-r.io` is not a valid host name",
        ),
        (
            "docker://r.io:0/a",
            "error: registry port `0` is not a number from 1 to 65535",
        ),
        (
            "docker://r.io:99999/a",
            "error: registry port `99999` is not a number from 1 to 65535",
        ),
        (
            "docker://r.io:/a",
            "error: registry port `` is not a number from 1 to 65535",
        ),
        ("docker://:5000/a", "error: the registry host is empty"),
        (
            "docker://r.io/a//b",
            "error: the repository has an empty path component",
        ),
        (
            "docker://r.io/a/../b",
            "error: repository component `..` is not allowed",
        ),
        (
            "r.io/../etc",
            "error: repository component `..` is not allowed",
        ),
        (
            "docker://r.io/Redis",
            "error: repository component `Redis` must be lowercase",
        ),
        (
            "docker://r.io/a-",
            "error: repository component `a-` must be lowercase letters and digits separated by `.`, `_`, `__` or dashes",
        ),
        (
            "docker://r.io/a___b",
            "error: repository component `a___b` must be lowercase letters and digits separated by `.`, `_`, `__` or dashes",
        ),
        (
            "docker://r.io/.hidden",
            "error: repository component `.hidden` must be lowercase letters and digits separated by `.`, `_`, `__` or dashes",
        ),
        (
            "docker://r.io/a b",
            "error: repository component `a b` must be lowercase letters and digits separated by `.`, `_`, `__` or dashes",
        ),
        (
            &long_repo,
            "error: the repository name is 259 bytes long, more than 255",
        ),
        ("redis:", "error: the tag is empty"),
        (
            "redis:-x",
            "error: tag `-x` must be up to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
        ),
        (
            "redis:a/b",
            "error: registry port `a` is not a number from 1 to 65535",
        ),
        (
            &long_tag,
            "error: tag `ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt` must be up to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
        ),
        (
            "redis@sha256:abc",
            "error: sha256 digest `sha256:abc` must be 64 lowercase hex digits",
        ),
        (
            "redis@md5:abc",
            "error: digest algorithm `md5` is not supported (only sha256 is)",
        ),
        (
            "redis@",
            "error: digest `` has no algorithm (expected `sha256:<64 hex digits>`)",
        ),
    ];
    for (input, expect) in cases {
        check(input, expect);
    }
}

#[test]
fn default_registry_is_configurable() {
    let r = Reference::parse("busybox:1", "127.0.0.1:5000").expect("valid");
    assert_eq!(r.registry, "127.0.0.1:5000");
    assert_eq!(r.repository, "library/busybox");
    assert_eq!(r.target(), "1");
    let error = Reference::parse("busybox", "").expect_err("no default registry");
    assert_eq!(
        error.to_string(),
        "invalid image reference `busybox`: the registry host is empty"
    );
}
