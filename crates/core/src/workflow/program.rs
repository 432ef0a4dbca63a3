//! A program: a workflow definition compiled by the host to numbers, decoded and checked once
//! at `define`, so that runs never meet a malformed node.
//!
//! Layout: `[PROGRAM_FORMAT, nodeCount, nodeCount * NODE_WORDS node words, child lists...]`.
//! Node 0 is the root; a container's children are `childCount` words of the child-list area
//! starting at `childStart`. Nodes no container lists are compensations (STEP nodes a
//! `compensate` word points at).

use super::codes::{
    BRANCH, JOIN_QUORUM, LOOP, MAP, MAX_DEPTH, MAX_INSTANCES, MAX_NODES, MAX_SIGNALS, NODE_WORDS, PARALLEL, PIPELINE,
    PROGRAM_FORMAT, SEQUENCE, SLEEP, STEP, WAIT,
};
use crate::error::WorkflowError;
use crate::resilience::{Backoff, Jitter};
use crate::Millis;

/// No node (a missing compensation, a root's parent).
pub const NONE: u32 = u32::MAX;

/// One decoded node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its kind (`codes::STEP` ...).
    pub kind: u8,
    /// First child's position in [`Program::children`].
    pub child_start: u32,
    /// How many children.
    pub child_count: u32,
    /// PARALLEL/MAP: the join policy.
    pub join: u8,
    /// PARALLEL/MAP: successes a quorum needs.
    pub quorum: u32,
    /// LOOP: most iterations; MAP: most instances at once (0 = no limit); PIPELINE: the buffer
    /// (most items a stage may finish ahead of the next stage's start, >= 1).
    pub limit: u32,
    /// LOOP: 1 = until (decide after each iteration); WAIT: 1 = continue on timeout; STEP:
    /// 1 = full jitter.
    pub flag: u8,
    /// WAIT: the signal index.
    pub signal: u32,
    /// SLEEP: how long (ms).
    pub ms: Millis,
    /// Node timeout (STEP: per attempt) in ms; infinite = none.
    pub timeout: Millis,
    /// STEP: the compensation node, or [`NONE`].
    pub compensate: u32,
    /// STEP: attempts in all (>= 1).
    pub attempts: u32,
    /// STEP: the delay before each retry.
    pub backoff: Backoff,
}

/// A checked program.
#[derive(Debug, Clone)]
pub struct Program {
    /// Nodes by index; node 0 is the root.
    pub nodes: Vec<Node>,
    /// The child-list area.
    pub children: Vec<u32>,
    /// Signal indices WAIT nodes use: `0..signals`.
    pub signals: u32,
}

impl Program {
    /// The `i`th child of `node`.
    #[must_use]
    pub fn child(&self, node: &Node, i: u32) -> u32 {
        self.children[(node.child_start + i) as usize]
    }
}

fn invalid(node: Option<u32>, reason: impl Into<String>) -> WorkflowError {
    WorkflowError::DefinitionInvalid { node, reason: reason.into() }
}

/// `value` as a whole number in `range`, or `None`.
fn whole(value: f64, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
    (value.fract() == 0.0 && value >= f64::from(*range.start()) && value <= f64::from(*range.end()))
        .then_some(value as u32)
}

/// Decodes and checks `words` as a program.
pub fn decode(words: &[f64]) -> Result<Program, WorkflowError> {
    if let Some(at) = words.iter().position(|w| w.is_nan()) {
        return Err(invalid(None, format!("word {at} is NaN")));
    }
    if words.len() < 2 || words[0] != f64::from(PROGRAM_FORMAT) {
        return Err(invalid(None, format!("not a program of format {PROGRAM_FORMAT}")));
    }
    let count = whole(words[1], 1..=MAX_NODES as u32)
        .ok_or_else(|| invalid(None, format!("node count must be a whole number in 1..={MAX_NODES}")))?
        as usize;
    let area = 2 + count * NODE_WORDS;
    if words.len() < area {
        return Err(invalid(None, format!("{count} nodes need {area} words, the program has {}", words.len())));
    }
    let list = &words[area..];
    let mut nodes = Vec::with_capacity(count);
    for (i, w) in words[2..area].chunks_exact(NODE_WORDS).enumerate() {
        nodes.push(node(i as u32, w, list.len())?);
    }
    let children = list
        .iter()
        .enumerate()
        .map(|(at, &w)| {
            whole(w, 1..=(count - 1) as u32).ok_or_else(|| invalid(None, format!("child-list word {at} is no node")))
        })
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|e| if count == 1 { invalid(None, "a single-node program has no children") } else { e })?;
    let program = Program { signals: signals(&nodes), nodes, children };
    check_tree(&program)?;
    Ok(program)
}

/// Decodes one node's words, checking what it alone decides.
fn node(i: u32, w: &[f64], list_len: usize) -> Result<Node, WorkflowError> {
    let bad = |reason: &str| invalid(Some(i), reason);
    let kind = whole(w[0], 0..=u32::from(PIPELINE)).ok_or_else(|| bad("kind is not 0..=8"))? as u8;
    let child_start = whole(w[1], 0..=u32::MAX).ok_or_else(|| bad("childStart is not a whole number"))?;
    let child_count = whole(w[2], 0..=u32::MAX).ok_or_else(|| bad("childCount is not a whole number"))?;
    if child_count > 0 && u64::from(child_start) + u64::from(child_count) > list_len as u64 {
        return Err(bad("its children run past the child-list area"));
    }
    let timeout = w[6];
    if timeout < 0.0 {
        return Err(bad("timeoutMs is negative"));
    }
    let compensate = if w[7] == -1.0 {
        NONE
    } else {
        whole(w[7], 1..=u32::MAX).ok_or_else(|| bad("compensate is neither -1 nor a node index"))?
    };
    let mut out = Node {
        kind,
        child_start,
        child_count,
        join: 0,
        quorum: 0,
        limit: 0,
        flag: 0,
        signal: 0,
        ms: 0.0,
        timeout,
        compensate,
        attempts: 1,
        backoff: Backoff { base: 0.0, factor: 1.0, max: 0.0, jitter: Jitter::None },
    };
    let children = |want: Option<u32>| match want {
        Some(n) if child_count != n => {
            Err(bad(if n == 0 { "a leaf has no children" } else { "needs exactly one child (its body)" }))
        }
        _ => Ok(()),
    };
    if kind != STEP && compensate != NONE {
        return Err(bad("only a step can have a compensation"));
    }
    match kind {
        STEP => {
            children(Some(0))?;
            out.flag = flag(w[5]).ok_or_else(|| bad("jitter (p3) is not 0 or 1"))?;
            out.attempts = whole(w[8], 1..=u32::MAX).ok_or_else(|| bad("retryAttempts is not a whole number >= 1"))?;
            let (base, max, factor) = (w[9], w[10], w[11]);
            if !(base >= 0.0 && base.is_finite() && max >= 0.0 && factor >= 1.0 && factor.is_finite()) {
                return Err(bad("retry delays must be >= 0 and finite, factor >= 1"));
            }
            let jitter = if out.flag == 1 { Jitter::Full } else { Jitter::None };
            out.backoff = Backoff { base, factor, max, jitter };
        }
        SEQUENCE | BRANCH => {}
        PARALLEL => {
            out.join = join(w[3]).ok_or_else(|| bad("join (p1) is not 0, 1 or 2"))?;
            if out.join == JOIN_QUORUM {
                out.quorum =
                    whole(w[4], 1..=child_count.max(1)).ok_or_else(|| bad("quorum must be 1..=the branch count"))?;
                if child_count == 0 {
                    return Err(bad("a quorum of no branches can never be reached"));
                }
            }
        }
        LOOP => {
            children(Some(1))?;
            out.flag = flag(w[3]).ok_or_else(|| bad("loop mode (p1) is not 0 (while) or 1 (until)"))?;
            out.limit = whole(w[4], 1..=1_000_000).ok_or_else(|| bad("maxIterations must be 1..=1000000"))?;
        }
        MAP => {
            children(Some(1))?;
            out.limit = whole(w[3], 0..=u32::MAX).ok_or_else(|| bad("concurrency (p1) is not a whole number"))?;
            out.join = join(w[4]).ok_or_else(|| bad("join (p2) is not 0, 1 or 2"))?;
            if out.join == JOIN_QUORUM {
                out.quorum = whole(w[5], 1..=MAX_INSTANCES as u32).ok_or_else(|| bad("quorum must be >= 1"))?;
            }
        }
        PIPELINE => {
            if child_count == 0 {
                return Err(bad("a pipeline needs at least one stage"));
            }
            out.limit = whole(w[3], 1..=u32::MAX).ok_or_else(|| bad("buffer (p1) must be a whole number >= 1"))?;
        }
        SLEEP => {
            children(Some(0))?;
            if !(w[3] >= 0.0 && w[3].is_finite()) {
                return Err(bad("sleep ms must be >= 0 and finite"));
            }
            out.ms = w[3];
        }
        WAIT => {
            children(Some(0))?;
            out.signal =
                whole(w[3], 0..=(MAX_SIGNALS - 1) as u32).ok_or_else(|| bad("signal index is not 0..65535"))?;
            out.flag = flag(w[4]).ok_or_else(|| bad("onTimeout (p2) is not 0 (fail) or 1 (continue)"))?;
        }
        _ => return Err(bad("kind is not 0..=8")),
    }
    Ok(out)
}

fn flag(value: f64) -> Option<u8> {
    whole(value, 0..=1).map(|v| v as u8)
}

fn join(value: f64) -> Option<u8> {
    whole(value, 0..=u32::from(JOIN_QUORUM)).map(|v| v as u8)
}

fn signals(nodes: &[Node]) -> u32 {
    nodes.iter().filter(|n| n.kind == WAIT).map(|n| n.signal + 1).max().unwrap_or(0)
}

/// The listed nodes form one tree under node 0 (each listed once, no cycle, not too deep);
/// every other node is a STEP that a compensation word points at.
fn check_tree(program: &Program) -> Result<(), WorkflowError> {
    let count = program.nodes.len();
    let mut listed = vec![false; count];
    for node in &program.nodes {
        for i in 0..node.child_count {
            let child = program.child(node, i) as usize;
            if std::mem::replace(&mut listed[child], true) {
                return Err(invalid(Some(child as u32), "is listed as a child twice"));
            }
        }
    }
    let mut depth = vec![0u32; count];
    let mut reached = vec![false; count];
    let mut stack = vec![0u32];
    reached[0] = true;
    while let Some(at) = stack.pop() {
        let node = &program.nodes[at as usize];
        if depth[at as usize] as usize >= MAX_DEPTH {
            return Err(invalid(Some(at), format!("nests deeper than {MAX_DEPTH} levels")));
        }
        for i in 0..node.child_count {
            let child = program.child(node, i);
            // Each node has at most one parent and the root none, so a child reached twice
            // cannot happen; a cycle stays out of the root's tree and is caught below.
            reached[child as usize] = true;
            depth[child as usize] = depth[at as usize] + 1;
            stack.push(child);
        }
    }
    let mut compensation = vec![false; count];
    for (i, node) in program.nodes.iter().enumerate() {
        if node.compensate == NONE {
            continue;
        }
        let target = node.compensate as usize;
        if target >= count {
            return Err(invalid(Some(i as u32), "compensate names no node"));
        }
        let comp = &program.nodes[target];
        if comp.kind != STEP || listed[target] || comp.compensate != NONE {
            return Err(invalid(
                Some(i as u32),
                "compensate must name a step no container lists, which has no compensation itself",
            ));
        }
        compensation[target] = true;
    }
    for i in 0..count {
        if !reached[i] && !compensation[i] {
            return Err(invalid(Some(i as u32), "is not reachable from the root (a cycle, or an orphan)"));
        }
    }
    Ok(())
}
