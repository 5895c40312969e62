//! The CPython set model against CPython itself: `fixtures/cpython_set/histories.json` holds
//! `list(a)` and `list(b)` after every operation of 250 random histories, recorded by
//! `fixtures/cpython_set/generate.py` (the order N's eval sets and pending sets iterate in).

use serde::Deserialize;
use validator::machine::pyset::PySet;

#[derive(Deserialize)]
struct Vectors {
    python: String,
    histories: Vec<Vec<Op>>,
}

#[derive(Deserialize)]
struct Op {
    op: String,
    set: String,
    #[serde(default)]
    uids: Vec<u16>,
    #[serde(default)]
    uid: u16,
    a: Vec<u16>,
    b: Vec<u16>,
}

#[test]
fn iteration_order_matches_cpython_on_recorded_histories() {
    let text = std::fs::read_to_string("fixtures/cpython_set/histories.json").unwrap();
    let vectors: Vectors = serde_json::from_str(&text).unwrap();
    assert!(vectors.python.starts_with("3."));
    let mut checked = 0usize;
    for (number, history) in vectors.histories.iter().enumerate() {
        let (mut a, mut b) = (PySet::new(), PySet::new());
        for (index, op) in history.iter().enumerate() {
            let (target, other) = if op.set == "a" {
                (&mut a, &b)
            } else {
                (&mut b, &a)
            };
            match op.op.as_str() {
                "list" => *target = PySet::from_list(op.uids.iter().copied()),
                "add" => target.add(op.uid),
                "update" => {
                    let other = other.clone();
                    target.update(&other);
                }
                "clear" => target.clear(),
                "discard" => target.discard(op.uid),
                other => panic!("unknown operation {other}"),
            }
            let where_ = format!("history {number}, operation {index} ({})", op.op);
            assert_eq!(a.iter().collect::<Vec<_>>(), op.a, "a after {where_}");
            assert_eq!(b.iter().collect::<Vec<_>>(), op.b, "b after {where_}");
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} operations recorded");
}
