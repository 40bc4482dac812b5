//! A linearizability checker for recorded histories: Wing & Gong's search with Lowe's memo of
//! (operations linearized, state) pairs, as in Porcupine. Given each operation's call and return
//! times as the clients saw them, it looks for one total order that respects real time (an
//! operation that returned before another was called comes first) and that the sequential
//! `Model` accepts, answer for answer. Operations whose outcome the client never learned (a
//! timeout, a dropped connection) return at "never": they may have taken effect at any point
//! after their call, or not at all.
//!
//! Linearizability is local (Herlihy & Wing), so a history of many keys is checked one key at a
//! time. `VersionedRegister` is one Conflux config: reads, writes and `If-Match` writes, whose
//! answers carry the version.
//!
//! Its own tests are `tests/linearizability_checker.rs`.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;
    fn init(&self) -> Self::State;
    /// The state after `input` ran in `state` and answered `output`, or `None` when a sequential
    /// object in `state` could not have answered that. `output` is `None` when the client never
    /// learned it: the operation took effect, answering whatever the model says.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;
}

/// One operation as a client recorded it. Times are from one clock (e.g. nanoseconds since the
/// test started); `returned: None` means the outcome is unknown, and then `output` is `None`.
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    pub input: I,
    pub output: Option<O>,
    pub called: u64,
    pub returned: Option<u64>,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order works. `longest` is the most operations any attempt linearized, a hint for
    /// where the history goes wrong.
    NotLinearizable {
        longest: usize,
    },
    /// The search took more than its step budget (pathological concurrency); nothing proven.
    GaveUp {
        steps: u64,
    },
}

#[derive(Clone, Copy)]
enum Event {
    Call(usize),
    Return(usize),
}

/// The call and return events in time order, as a doubly linked list with a sentinel at 0 that
/// the search can unlink an operation from and link it back into.
struct Events {
    event: Vec<Event>,
    prev: Vec<usize>,
    next: Vec<usize>,
    /// Per operation: the list position of its return event.
    return_at: Vec<usize>,
}

const END: usize = usize::MAX;

impl Events {
    fn new<I, O>(history: &[Operation<I, O>]) -> Events {
        // At equal times calls come first: touching operations count as concurrent.
        let mut timed: Vec<(u64, u8, Event)> = Vec::with_capacity(2 * history.len());
        for (id, op) in history.iter().enumerate() {
            timed.push((op.called, 0, Event::Call(id)));
            timed.push((op.returned.unwrap_or(u64::MAX), 1, Event::Return(id)));
        }
        timed.sort_by_key(|(time, order, _)| (*time, *order));
        let count = timed.len() + 1;
        let mut event = vec![Event::Call(usize::MAX)];
        let mut return_at = vec![0; history.len()];
        for (position, (_, _, e)) in timed.into_iter().enumerate() {
            if let Event::Return(id) = e {
                return_at[id] = position + 1;
            }
            event.push(e);
        }
        let prev = (0..count).map(|i| i.wrapping_sub(1)).collect();
        let next = (0..count).map(|i| if i + 1 < count { i + 1 } else { END }).collect();
        Events { event, prev, next, return_at }
    }

    fn unlink(&mut self, at: usize) {
        let (prev, next) = (self.prev[at], self.next[at]);
        self.next[prev] = next;
        if next != END {
            self.prev[next] = prev;
        }
    }

    /// Undoes `unlink(at)`; links must be restored in the reverse order of their removal.
    fn relink(&mut self, at: usize) {
        let (prev, next) = (self.prev[at], self.next[at]);
        self.next[prev] = at;
        if next != END {
            self.prev[next] = at;
        }
    }
}

/// Checks one object's history against `model`, spending at most `max_steps` search steps.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], max_steps: u64) -> Verdict {
    let mut events = Events::new(history);
    let mut linearized = vec![false; history.len()];
    let mut count = 0;
    let mut longest = 0;
    let mut seen: HashSet<(Vec<bool>, M::State)> = HashSet::new();
    // Each frame: the call event unlinked, its operation, and the state before it.
    let mut stack: Vec<(usize, usize, M::State)> = Vec::new();
    let mut state = model.init();
    // The walk always meets a return before the end of the list: every call's return is after it.
    let mut at = events.next[0];
    let mut steps = 0u64;
    while events.next[0] != END {
        steps += 1;
        if steps > max_steps {
            return Verdict::GaveUp { steps };
        }
        match events.event[at] {
            Event::Call(id) => {
                let op = &history[id];
                let after = model.step(&state, &op.input, op.output.as_ref());
                let advanced = after.and_then(|after| {
                    linearized[id] = true;
                    if seen.insert((linearized.clone(), after.clone())) {
                        Some(after)
                    } else {
                        linearized[id] = false;
                        None
                    }
                });
                match advanced {
                    Some(after) => {
                        stack.push((at, id, std::mem::replace(&mut state, after)));
                        events.unlink(at);
                        events.unlink(events.return_at[id]);
                        count += 1;
                        longest = longest.max(count);
                        at = events.next[0];
                    }
                    None => at = events.next[at],
                }
            }
            Event::Return(_) => {
                // An operation that has returned must be linearized before anything later:
                // undo the last choice and try the next candidate after it.
                let Some((call_at, id, before)) = stack.pop() else {
                    return Verdict::NotLinearizable { longest };
                };
                events.relink(events.return_at[id]);
                events.relink(call_at);
                linearized[id] = false;
                count -= 1;
                state = before;
                at = events.next[call_at];
            }
        }
    }
    Verdict::Linearizable
}

/// One Conflux config as a sequential object: its content (a number standing for it) and its
/// version, which every write increases by one (the first write makes version 1).
pub struct VersionedRegister;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RegisterState {
    pub value: Option<u64>,
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterInput {
    Read,
    Write {
        value: u64,
    },
    /// A write with `If-Match` on `expected` (a version).
    WriteIf {
        expected: u64,
        value: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutput {
    /// What a read saw: content and version, or nothing yet.
    Seen(Option<(u64, u64)>),
    Written {
        version: u64,
    },
    /// 412: the version was not `expected`.
    Mismatch,
}

impl Model for VersionedRegister {
    type State = RegisterState;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> RegisterState {
        RegisterState::default()
    }

    fn step(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<RegisterState> {
        let written = |value| RegisterState { value: Some(value), version: state.version + 1 };
        match (input, output) {
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Seen(seen))) => {
                (*seen == state.value.map(|value| (value, state.version))).then_some(*state)
            }
            (RegisterInput::Write { value }, None) => Some(written(*value)),
            (RegisterInput::Write { value }, Some(RegisterOutput::Written { version })) => {
                (*version == state.version + 1).then(|| written(*value))
            }
            (RegisterInput::WriteIf { expected, value }, None) => {
                Some(if *expected == state.version { written(*value) } else { *state })
            }
            (RegisterInput::WriteIf { expected, value }, Some(RegisterOutput::Written { version })) => {
                (*expected == state.version && *version == state.version + 1).then(|| written(*value))
            }
            (RegisterInput::WriteIf { expected, .. }, Some(RegisterOutput::Mismatch)) => {
                (*expected != state.version).then_some(*state)
            }
            _ => None,
        }
    }
}
