//! What `--help` says and how the command line fails: global options under their own heading,
//! `[env: NAME]` without a stray `=`, no internal jargon, shell completions, and errors as JSON
//! with `--json`.

use clap::CommandFactory as _;
use redstream_testkit::RedisServer;

use crate::support::Cli;

/// Every command's long help, with its path (`redstream dlq list`).
fn every_help() -> Vec<(String, String)> {
    fn walk(command: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        let path = format!("{path} {}", command.get_name()).trim().to_owned();
        out.push((path.clone(), command.render_long_help().to_string()));
        for sub in command.get_subcommands_mut() {
            walk(sub, &path, out);
        }
    }
    let mut command = redstream_cli::Cli::command();
    command.build();
    let mut out = Vec::new();
    walk(&mut command, "", &mut out);
    out
}

#[test]
fn help_has_no_stray_equals_and_no_jargon() {
    let helps = every_help();
    assert!(
        helps.len() > 20,
        "every subcommand is walked: {}",
        helps.len()
    );
    for (path, help) in &helps {
        assert!(!help.contains("=]"), "{path}: an [env: NAME=] line: {help}");
        for jargon in ["seed 0", "seed's", "issue"] {
            assert!(
                !help.to_lowercase().contains(jargon),
                "{path}: {jargon:?} in help: {help}"
            );
        }
    }
    let readme = include_str!("../../README.md");
    for jargon in ["seed 0", "issue "] {
        assert!(!readme.contains(jargon), "{jargon:?} in the CLI README");
    }
}

#[test]
fn global_options_have_their_own_heading() {
    let cli = Cli::with_url("redis://127.0.0.1:1".to_owned());
    for args in [
        &["--help"][..],
        &["dlq", "list", "--help"],
        &["streams", "--help"],
    ] {
        let help = cli.run(args).ok();
        let (own, global) = help
            .split_once("Global options:")
            .unwrap_or_else(|| panic!("no global heading in {args:?}: {help}"));
        // Help wraps to the terminal's width: compare with the line breaks as spaces.
        let global = global.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(global.contains("--url <URL>"), "{help}");
        assert!(global.contains("--json"), "{help}");
        assert!(global.contains("[env: REDIS_URL]"), "{help}");
        assert!(global.contains("[env: REDSTREAM_KEY_LAYOUT]"), "{help}");
        assert!(
            !own.contains("--url"),
            "--url is under its heading only: {help}"
        );
    }
    let list = cli.run(&["dlq", "list", "--help"]).ok();
    let own = list.split_once("Global options:").unwrap().0;
    assert!(
        own.contains("--before <ID>") && own.contains("--error <TEXT>"),
        "{list}"
    );
}

#[test]
fn completions_for_each_shell() {
    let cli = Cli::with_url("redis://127.0.0.1:1".to_owned());
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = cli.run(&["completions", shell]).ok();
        for word in ["redstream", "dlq", "--before", "completions"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    // The bash script loads and registers the completion.
    let script = cli.run(&["completions", "bash"]).ok();
    let out = std::process::Command::new("bash")
        .args(["-c", "eval \"$0\"; complete -p redstream", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("redstream"),
        "{out:?}"
    );
    let unknown = cli.run(&["completions", "tcsh"]);
    assert_eq!(unknown.code, Some(2), "{unknown:#?}");
}

/// With `--json` every failure is one JSON line on stderr, with the exit code it has without.
#[tokio::test]
async fn errors_are_json_with_json() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let error = |out: crate::support::Output, code: i32| -> serde_json::Value {
        assert_eq!(out.code, Some(code), "{out:#?}");
        assert_eq!(out.stdout, "", "{out:#?}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out:#?}");
        let value: serde_json::Value =
            serde_json::from_str(&out.stderr).unwrap_or_else(|err| panic!("{err}: {out:#?}"));
        assert!(value["error"]["message"].as_str().is_some(), "{value}");
        value["error"].clone()
    };
    let missing = error(cli.run(&["--json", "info", "nothing.here"]), 1);
    assert_eq!(missing["kind"], "not_found");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("nothing.here"),
        "{missing}"
    );
    let usage = error(cli.run(&["dlq", "list", "--before", "x", "--json"]), 1);
    assert_eq!(usage["kind"], "usage");
    let refused = error(cli.run(&["--json", "dlq", "purge"]), 1);
    assert!(
        refused["message"].as_str().unwrap().contains("pass --yes"),
        "{refused}"
    );
    let clap = error(cli.run(&["--json", "dlq", "list", "--count", "0"]), 2);
    assert_eq!(clap["kind"], "usage");
    assert!(
        clap["message"].as_str().unwrap().contains("--count"),
        "{clap}"
    );
    let unknown = error(cli.run(&["--json", "nonsense"]), 2);
    assert!(
        unknown["message"].as_str().unwrap().contains("nonsense"),
        "{unknown}"
    );
    // A password in the URL stays out of the JSON too.
    let unreachable = Cli::with_url("redis://:hunter2@127.0.0.1:1".to_owned());
    let down = error(unreachable.run(&["--json", "streams"]), 1);
    assert_eq!(down["kind"], "connection");
    assert!(!down.to_string().contains("hunter2"), "{down}");
    // Without --json: the plain line, same code.
    cli.run(&["info", "nothing.here"])
        .fails_with("no such stream");
    let plain = cli.run(&["dlq", "list", "--count", "0"]);
    assert_eq!(plain.code, Some(2));
    assert!(plain.stderr.starts_with("error: "), "{plain:#?}");
}
