//! `netsim`: the local cluster harness. It lands with the netsim issue; until then this
//! binary only says so.

fn main() {
    eprintln!("netsim: not implemented yet (see the netsim issue)");
    std::process::exit(2);
}
