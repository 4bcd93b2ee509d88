//! DICOM files the fuzzer found to cost gigabytes (`fuzz/seeds/dicom_wsi/regression-*.dcm`, each a
//! few kilobytes): each is refused with a reason, and no allocation on the way exceeds 64 MB
//! (this test binary's allocator aborts the process on a larger one, naming it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;

const LIMIT: usize = 64 << 20;

struct Capped;

// SAFETY: forwards to the system allocator; only refuses (by aborting) sizes over the limit.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        refuse_if_large(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        refuse_if_large(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn refuse_if_large(size: usize) {
    if size > LIMIT {
        // No allocation here: the message is static.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"an allocation over 64 MB while reading a hostile DICOM file\n",
        );
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

#[test]
fn hostile_dicom_files_are_refused_without_a_large_allocation() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/dicom_wsi");
    let mut tried = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("regression-") {
            continue;
        }
        let Err(error) = grassroots_slides::Slide::open(&path) else {
            panic!("{name} opened");
        };
        assert!(
            error.to_string().contains("not a readable DICOM file"),
            "{name}: {error}"
        );
        tried += 1;
    }
    assert!(
        tried >= 4,
        "only {tried} regression files in {}",
        seeds.display()
    );
}
