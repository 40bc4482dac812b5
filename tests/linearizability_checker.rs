//! The linearizability checker (`support/linearizability.rs`) on histories whose answer is
//! known: it must accept every history a sequential register could have produced under any
//! overlap of calls, and refuse the classic violations — a stale read, a lost acknowledged write,
//! two `If-Match` writes on one version both winning, readers that disagree on the order of two
//! writes — while treating an operation of unknown outcome as possibly applied or not.

#[path = "support/linearizability.rs"]
mod linearizability;

use linearizability::{
    check, Operation, RegisterInput, RegisterInput::*, RegisterOutput, RegisterOutput::*, RegisterState, Verdict,
    VersionedRegister,
};
use proptest::prelude::*;

const BUDGET: u64 = 10_000_000;

type Op = Operation<RegisterInput, RegisterOutput>;

fn op(input: RegisterInput, output: RegisterOutput, called: u64, returned: u64) -> Op {
    Operation { input, output: Some(output), called, returned: Some(returned) }
}

fn unknown(input: RegisterInput, called: u64) -> Op {
    Operation { input, output: None, called, returned: None }
}

fn verdict(history: &[Op]) -> Verdict {
    check(&VersionedRegister, history, BUDGET)
}

#[test]
fn an_empty_history_and_a_sequential_one_are_linearizable() {
    assert_eq!(verdict(&[]), Verdict::Linearizable);
    let history = [
        op(Read, Seen(None), 0, 1),
        op(Write { value: 7 }, Written { version: 1 }, 2, 3),
        op(Read, Seen(Some((7, 1))), 4, 5),
        op(WriteIf { expected: 1, value: 8 }, Written { version: 2 }, 6, 7),
        op(WriteIf { expected: 1, value: 9 }, Mismatch, 8, 9),
        op(Read, Seen(Some((8, 2))), 10, 11),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    let write = op(Write { value: 1 }, Written { version: 1 }, 0, 10);
    for seen in [None, Some((1, 1))] {
        assert_eq!(verdict(&[write.clone(), op(Read, Seen(seen), 2, 8)]), Verdict::Linearizable, "{seen:?}");
    }
    // Answers listed out of time order change nothing.
    assert_eq!(verdict(&[op(Read, Seen(Some((1, 1))), 2, 8), write]), Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_refused() {
    let history = [op(Write { value: 1 }, Written { version: 1 }, 0, 1), op(Read, Seen(None), 2, 3)];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { longest: 1 }), "{:?}", verdict(&history));
}

#[test]
fn a_lost_acknowledged_write_is_refused() {
    let history = [
        op(Write { value: 1 }, Written { version: 1 }, 0, 1),
        op(Write { value: 2 }, Written { version: 2 }, 2, 3),
        op(Read, Seen(Some((1, 1))), 4, 5),
    ];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
}

#[test]
fn two_if_match_writes_on_one_version_cannot_both_win() {
    let mut history = vec![
        op(Write { value: 1 }, Written { version: 1 }, 0, 1),
        op(WriteIf { expected: 1, value: 2 }, Written { version: 2 }, 2, 6),
        op(WriteIf { expected: 1, value: 3 }, Written { version: 2 }, 3, 7),
    ];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
    history[2].output = Some(Mismatch);
    assert_eq!(verdict(&history), Verdict::Linearizable, "one wins, the other is told 412");
}

#[test]
fn readers_that_disagree_on_the_order_of_two_writes_are_refused() {
    let writes =
        [op(Write { value: 1 }, Written { version: 1 }, 0, 5), op(Write { value: 2 }, Written { version: 2 }, 0, 5)];
    // The versions give the order away, so reader answers must agree with them.
    let consistent = [op(Read, Seen(Some((1, 1))), 1, 2), op(Read, Seen(Some((2, 2))), 3, 4)];
    assert_eq!(verdict(&[&writes[..], &consistent[..]].concat()), Verdict::Linearizable);
    let backwards = [op(Read, Seen(Some((2, 2))), 1, 2), op(Read, Seen(Some((1, 1))), 3, 4)];
    assert!(matches!(verdict(&[&writes[..], &backwards[..]].concat()), Verdict::NotLinearizable { .. }));
}

#[test]
fn a_write_of_unknown_outcome_may_or_may_not_have_happened_but_only_once() {
    let lost = unknown(Write { value: 1 }, 0);
    let not_seen = [lost.clone(), op(Read, Seen(None), 5, 6)];
    assert_eq!(verdict(&not_seen), Verdict::Linearizable, "it may never have happened");
    let seen = [lost.clone(), op(Read, Seen(Some((1, 1))), 5, 6)];
    assert_eq!(verdict(&seen), Verdict::Linearizable, "it may have happened");
    let seen_then_gone = [lost.clone(), op(Read, Seen(Some((1, 1))), 5, 6), op(Read, Seen(None), 7, 8)];
    assert!(matches!(verdict(&seen_then_gone), Verdict::NotLinearizable { .. }), "once seen, it stays");
    let before_its_call = [op(Read, Seen(Some((1, 1))), 0, 1), unknown(Write { value: 1 }, 2)];
    assert!(matches!(verdict(&before_its_call), Verdict::NotLinearizable { .. }), "never before it was called");
}

#[test]
fn the_budget_bounds_the_search() {
    let history: Vec<Op> = (0..12).map(|i| unknown(Write { value: i as u64 }, 0)).collect();
    let reads = [op(Read, Seen(Some((99, 13))), 1, 2)];
    assert!(matches!(check(&VersionedRegister, &[&history[..], &reads[..]].concat(), 1_000), Verdict::GaveUp { .. }));
}

/// A sequential run of `inputs` on the register: each operation with its answer and the state
/// it ran in.
fn sequential_run(inputs: &[(u8, u64)]) -> Vec<(RegisterInput, RegisterOutput, RegisterState)> {
    let mut state = RegisterState::default();
    let mut run = Vec::new();
    for (kind, value) in inputs {
        let before = state;
        let written = |state: RegisterState, value| RegisterState { value: Some(value), version: state.version + 1 };
        let (input, output) = match kind % 3 {
            0 => (Read, Seen(state.value.map(|v| (v, state.version)))),
            1 => {
                state = written(state, *value);
                (Write { value: *value }, Written { version: state.version })
            }
            _ => {
                let expected = state.version.saturating_sub(value % 2);
                let input = WriteIf { expected, value: *value };
                if expected == state.version {
                    state = written(state, *value);
                    (input, Written { version: state.version })
                } else {
                    (input, Mismatch)
                }
            }
        };
        run.push((input, output, before));
    }
    run
}

/// The run's operations, each given an interval around its linearization point (points 10
/// apart): wide intervals overlap, intervals under 5 on each side keep the run's order strict.
fn timed(run: &[(RegisterInput, RegisterOutput, RegisterState)], widths: &[(u64, u64)]) -> Vec<Op> {
    run.iter()
        .zip(widths)
        .enumerate()
        .map(|(point, ((input, output, _), (before, after)))| {
            let at = 1_000 + 10 * point as u64;
            op(*input, *output, at - before, at + after)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_history_a_register_could_produce_is_accepted(
        inputs in proptest::collection::vec((any::<u8>(), 0u64..4), 1..60),
        widths in proptest::collection::vec((0u64..40, 0u64..40), 60),
    ) {
        let history = timed(&sequential_run(&inputs), &widths);
        prop_assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn in_a_strictly_ordered_history_a_read_of_any_older_state_is_refused(
        inputs in proptest::collection::vec((any::<u8>(), 0u64..4), 2..40),
        widths in proptest::collection::vec((0u64..5, 0u64..5), 40),
        pick in any::<prop::sample::Index>(),
    ) {
        let run = sequential_run(&inputs);
        let mut history = timed(&run, &widths);
        // Each read that some older state differs from, with that state.
        let stale: Vec<(usize, RegisterState)> = run
            .iter()
            .enumerate()
            .filter(|(_, (input, _, _))| *input == Read)
            .filter_map(|(index, (_, _, now))| {
                run[..index].iter().map(|(_, _, then)| *then).find(|then| then != now).map(|then| (index, then))
            })
            .collect();
        prop_assume!(!stale.is_empty());
        let (index, older) = stale[pick.index(stale.len())];
        history[index].output = Some(Seen(older.value.map(|v| (v, older.version))));
        prop_assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }), "{:?}", history);
    }
}
