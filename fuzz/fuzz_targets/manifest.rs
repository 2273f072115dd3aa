//! `FamilyManifest::parse` (the TOML family manifest, every check but the files' existence)
//! on arbitrary text. A manifest that parses must also survive `to_toml` (what `save` writes):
//! parsed again it is the same manifest.
#![no_main]

use std::path::Path;

use ecspec_family::FamilyManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/family.toml");
    let m = match FamilyManifest::parse(&text, path) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = (m.active_version(), m.base_file());
    assert!(
        m.version(m.active_version()).is_some(),
        "the active version is listed"
    );
    let written = m.to_toml();
    match FamilyManifest::parse(&written, path) {
        Ok(again) => assert_eq!(again, m, "to_toml round-trips:\n{written}"),
        Err(e) => panic!("a checked manifest writes text it cannot read back: {e}\n{written}"),
    }
});
