//! web-config: the on-box web page and JSON API (see the library). On the appliance the same
//! code runs from the multi-call binary as `/bin/web-config`.

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    web_config::main(&argv)
}
