//! The README is the binary: every command clap defines is in the README's command table, and the
//! settings table lists exactly the settings the configuration reads (each found from the source).

use std::collections::BTreeSet;

use clap::CommandFactory;

use super::Cli;
use crate::config::Settings;

const README: &str = include_str!("../../README.md");

/// Names in the README that look like settings but are not the service's configuration.
const NOT_SETTINGS: [&str; 3] = [
    // The test suite's database, read by the tests.
    "TEST_DATABASE_URL",
    // `connections add` reads the client secret from it, for that one command.
    "CLIENT_SECRET",
    // The browser tests fail instead of skipping when it is set.
    "CONNECT_HUB_REQUIRE_BROWSER",
];

/// The text of the section that starts with the heading `## {title}`, up to the next heading.
fn section(readme: &str, title: &str) -> String {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("the README has a `## {title}`"));
    let body = &readme[start + title.len() + 5..];
    let end = body.find("\n#").unwrap_or(body.len());
    body[..end].to_owned()
}

/// The rows of the first table in `text`, as their cells.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| {
            l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| name") && !l.starts_with("| command")
        })
        .map(|l| l.split(" | ").map(|c| c.trim_matches(['|', ' ']).to_owned()).collect())
        .collect()
}

/// What is between backticks in `text`.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn is_setting_name(s: &str) -> bool {
    s.contains('_') && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The settings the table names: every name in backticks in its first column.
fn settings_in_table(readme: &str) -> BTreeSet<String> {
    let rows = table_rows(&section(readme, "Configuration"));
    rows.iter().flat_map(|r| quoted(&r[0]).into_iter().filter(|s| is_setting_name(s)).map(str::to_owned)).collect()
}

/// Each command path the table's first column shows (`connections assign`, `serve`): the words a
/// backticked command starts with, `connect-hub` left out.
fn commands_in_table(readme: &str) -> BTreeSet<String> {
    let rows = table_rows(&section(readme, "Commands"));
    rows.iter()
        .flat_map(|r| quoted(&r[0]).into_iter().map(str::to_owned).collect::<Vec<_>>())
        .map(|span| {
            let words = span.split_whitespace().skip_while(|w| *w == "connect-hub");
            let words: Vec<&str> = words
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
                .collect();
            words.join(" ")
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// Every command clap defines, subcommands as `parent child`; hidden ones (benchmark helpers) not.
fn commands_of_cli() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let path =
                if prefix.is_empty() { sub.get_name().to_owned() } else { format!("{prefix} {}", sub.get_name()) };
            if sub.has_subcommands() {
                walk(sub, &path, out);
            } else {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), "", &mut out);
    out
}

/// What is missing from the README (or read by nobody), as lines to print; empty when they agree.
fn disagreements(readme: &str) -> Vec<String> {
    let read: BTreeSet<String> = Settings::names_read().into_iter().map(str::to_owned).collect();
    let table = settings_in_table(readme);
    let mut out = Vec::new();
    for name in read.difference(&table) {
        out.push(format!("the configuration reads {name}, but the README's settings table does not list it"));
    }
    for name in table.difference(&read) {
        out.push(format!("the README's settings table lists {name}, but the configuration never reads it"));
    }
    // Elsewhere in the README too, a setting-like name is one that exists.
    let anywhere: BTreeSet<&str> = quoted(readme).into_iter().filter(|s| is_setting_name(s)).collect();
    for name in anywhere {
        if !read.contains(name) && !NOT_SETTINGS.contains(&name) {
            out.push(format!("the README names `{name}`, which is no setting"));
        }
    }
    let documented = commands_in_table(readme);
    for command in commands_of_cli().difference(&documented) {
        out.push(format!("`connect-hub {command}` is not in the README's command table"));
    }
    out
}

#[test]
fn the_readme_lists_every_command_and_exactly_the_settings_the_binary_reads() {
    let problems = disagreements(README);
    assert!(problems.is_empty(), "the README and the binary disagree:\n{}", problems.join("\n"));
}

#[test]
fn the_check_finds_a_command_or_a_setting_taken_out_of_the_readme() {
    // Each row of a table taken out in turn is found missing, as is a setting nobody reads.
    for (row, missing) in [
        ("| `connect-hub migrate-store", "`connect-hub migrate-store` is not in the README's command table"),
        ("| `connect-hub connect-link", "`connect-hub connect-link` is not in the README's command table"),
        (
            "| `CONNECT_PUBLIC_START`",
            "the configuration reads CONNECT_PUBLIC_START, but the README's settings table does not list it",
        ),
    ] {
        let without: String = README.lines().filter(|l| !l.starts_with(row)).map(|l| format!("{l}\n")).collect();
        assert!(without.len() < README.len(), "the README has a row starting {row}");
        assert!(disagreements(&without).contains(&missing.to_owned()), "{row}");
    }
    let extra = README.replace("| `BIND_ADDR` |", "| `BIND_ADDR`, `EVENT_RETENTION_DAYS` |");
    let found = disagreements(&extra);
    assert!(
        found.contains(
            &"the README's settings table lists EVENT_RETENTION_DAYS, but the configuration never reads it".into()
        ),
        "{found:?}"
    );
    let assign = README.replace("connections assign ID", "connections give ID");
    assert!(disagreements(&assign)
        .contains(&"`connect-hub connections assign` is not in the README's command table".into()));
}

#[test]
fn the_loader_reads_the_settings_it_is_known_for() {
    let read = Settings::names_read();
    for name in ["DATABASE_URL", "CONNECT_RETURN_ORIGINS", "BRAND_SUPPORT_URL", "CONNECT_HUB_CONFIG", "RUST_LOG"] {
        assert!(read.contains(name), "{name}");
    }
    assert!(!read.contains("EVENT_RETENTION_DAYS") && !read.contains("OUTBOUND_TIMEOUT_SECS"));
}
