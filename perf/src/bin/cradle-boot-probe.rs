//! `cradle-boot-probe [--timeout SECS] --marker TEXT -- VMM ARGS...`: boots
//! once and prints one JSON line (time to the marker, time to exit, exit
//! status, peak memory). The boot suite copies it into the nested L1.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: cradle-boot-probe [--timeout SECS] --marker TEXT -- VMM ARGS...";
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let (flags, cmd) = (&args[..split], &args[split + 1..]);
    let mut marker = None;
    let mut timeout = Duration::from_secs(150);
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        match (f.as_str(), it.next()) {
            ("--marker", Some(m)) => marker = Some(m.clone()),
            ("--timeout", Some(s)) => match s.parse::<u64>() {
                Ok(n) if n > 0 => timeout = Duration::from_secs(n),
                _ => {
                    eprintln!("cradle-boot-probe: bad --timeout {s}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("cradle-boot-probe: bad flag {f}\n{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(marker), false) = (marker, cmd.is_empty()) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    match cradle_perf::boot::probe::probe(cmd, &marker, timeout) {
        Ok(r) => match serde_json::to_string(&r) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cradle-boot-probe: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("cradle-boot-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
