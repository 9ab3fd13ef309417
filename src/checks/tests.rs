use std::time::Duration;

use super::{next_check, Outcome};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn after_a_passed_check_the_next_is_within_the_last_fifth_of_the_interval() {
    for _ in 0..200 {
        let at = next_check(HOUR, 1_000, Outcome::Ok, 1).unwrap();
        assert!((1_000 + 2_880_000..=1_000 + 3_600_000).contains(&at), "{at}");
    }
    let earliest = (0..200).map(|_| next_check(HOUR, 0, Outcome::Ok, 1).unwrap()).min().unwrap();
    assert!(earliest < 3_000_000, "with jitter, not always the full interval: {earliest}");
    let refused = next_check(HOUR, 0, Outcome::Refused, 1).unwrap();
    assert!(refused >= 2_880_000, "a refused one waits like a passed one");
}

#[test]
fn a_failed_check_is_tried_again_sooner_backing_off_up_to_the_interval() {
    let first = next_check(HOUR, 0, Outcome::Failed, 1).unwrap();
    assert!((2_000..=2_400).contains(&first), "about 2 s: {first}");
    let fourth = next_check(HOUR, 0, Outcome::Failed, 4).unwrap();
    assert!((12_800..=19_200).contains(&fourth), "about 16 s: {fourth}");
    let short = Duration::from_secs(3);
    for failures in [3, 20] {
        assert_eq!(next_check(short, 0, Outcome::Failed, failures), Some(3_000), "capped at the interval");
    }
}

#[test]
fn with_checks_off_nothing_is_scheduled() {
    for outcome in [Outcome::Ok, Outcome::Refused, Outcome::Failed] {
        assert_eq!(next_check(Duration::ZERO, 5, outcome, 1), None);
    }
}
