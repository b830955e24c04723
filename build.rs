// The journal's schema lives in migrations/ and is embedded with include_dir!;
// rebuild when a migration is added or edited.
fn main() {
    println!("cargo:rerun-if-changed=migrations/");
}
