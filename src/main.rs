//! The `fovea` command line: a thin layer over the library.

fn main() {
    eprintln!("fovea: the command line is not written yet");
    std::process::exit(2);
}
