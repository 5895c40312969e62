//! CPython's `set` for small non-negative integers: the same table, probing and resizing, so
//! iteration gives the order `list(s)` gives in CPython 3.7 to 3.13.
//!
//! N keeps its eval sets and pending uids in Python sets and iterates them with `list(...)`.
//! That order decides which uid keeps a copied model on equal commit blocks and which uids
//! survive a tie at the eval-set cut, and it is not ascending once uids pass the table size
//! (`list({10, 40})` is `[40, 10]`). It is a deterministic function of the set's history, so
//! this model replays that history: `set(list)`, `.add`, `.update(other_set)`, `.clear()`,
//! `.discard`. An integer's hash is itself, which is what makes the model small.
//!
//! The code follows `Objects/setobject.c` (`set_add_entry`, `set_insert_clean`,
//! `set_table_resize`, `set_merge`, `set_clear_internal`, `set_discard_entry`); the tests
//! compare it with CPython itself on recorded random histories.

use serde::{Deserialize, Serialize};

/// `PySet_MINSIZE`: the size of a fresh (or cleared) set's table.
const TABLE_SIZE_MIN: usize = 8;
/// CPython probes this many following slots before it perturbs.
const LINEAR_PROBES: usize = 9;
/// CPython's `PERTURB_SHIFT`.
const PERTURB_SHIFT: u32 = 5;
/// Above this many entries a resize doubles instead of quadrupling.
const USED_QUADRUPLE_MAX: usize = 50_000;

/// One slot of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Slot {
    /// Never used since the table was built.
    Empty,
    /// Held a key that was discarded (CPython's `dummy`).
    Dummy,
    /// Holds a key.
    Key(u16),
}

/// A CPython set of uids.
///
/// Its binary form is the table itself; its JSON form is `{"size", "keys": [[slot, uid]...],
/// "dummies": [slot...]}`, and a plain list of uids (how schemas 1 to 3 wrote a set) reads as
/// a set built from that list. Either is checked on the way in (a power-of-two table, every
/// key where a lookup finds it, room left to end a probe), so a damaged checkpoint cannot make
/// a lookup loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PySet {
    /// The table; its length is a power of two, at least 8.
    slots: Vec<Slot>,
    /// Slots that are not empty (keys and dummies).
    fill: usize,
    /// Slots that hold keys.
    used: usize,
}

impl Default for PySet {
    fn default() -> Self {
        Self::new()
    }
}

impl PySet {
    /// `set()`.
    pub fn new() -> Self {
        Self {
            slots: vec![Slot::Empty; TABLE_SIZE_MIN],
            fill: 0,
            used: 0,
        }
    }

    /// `set(uids)` for a list: each uid added in turn.
    pub fn from_list(uids: impl IntoIterator<Item = u16>) -> Self {
        let mut set = Self::new();
        for uid in uids {
            set.add(uid);
        }
        set
    }

    /// The number of uids.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().saturating_sub(1)
    }

    /// `uid in s`.
    pub fn contains(&self, uid: u16) -> bool {
        self.find(uid).is_some()
    }

    /// The slot holding `uid`, probing as CPython's lookup does.
    fn find(&self, uid: u16) -> Option<usize> {
        let mask = self.mask();
        let mut index = usize::from(uid) & mask;
        let mut perturb = usize::from(uid);
        // Every probe sequence ends at an empty slot: the table is never full (a resize keeps
        // fill under 60%), so this loop ends.
        loop {
            let probes = probes_at(index, mask);
            for offset in 0..=probes {
                match self.slots.get(index.wrapping_add(offset)) {
                    Some(Slot::Empty) | None => return None,
                    Some(Slot::Key(key)) if *key == uid => return Some(index.wrapping_add(offset)),
                    Some(_) => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            index = next_index(index, perturb, mask);
        }
    }

    /// `s.add(uid)`: CPython's `set_add_entry`.
    pub fn add(&mut self, uid: u16) {
        let mask = self.mask();
        let mut index = usize::from(uid) & mask;
        let mut perturb = usize::from(uid);
        let mut slot_free: Option<usize> = None;
        let slot_empty = 'probe: loop {
            let probes = probes_at(index, mask);
            for offset in 0..=probes {
                let at = index.wrapping_add(offset);
                match self.slots.get(at) {
                    Some(Slot::Empty) | None => break 'probe at,
                    Some(Slot::Key(key)) if *key == uid => return,
                    Some(Slot::Dummy) => {
                        slot_free.get_or_insert(at);
                    }
                    Some(Slot::Key(_)) => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            index = next_index(index, perturb, mask);
        };
        if let Some(free) = slot_free {
            // Reusing a dummy neither grows `fill` nor triggers a resize.
            self.put(free, uid);
            self.used = self.used.saturating_add(1);
            return;
        }
        self.put(slot_empty, uid);
        self.fill = self.fill.saturating_add(1);
        self.used = self.used.saturating_add(1);
        if self.fill.saturating_mul(5) < mask.saturating_mul(3) {
            return;
        }
        let factor = if self.used > USED_QUADRUPLE_MAX { 2 } else { 4 };
        self.resize(self.used.saturating_mul(factor));
    }

    fn put(&mut self, at: usize, uid: u16) {
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Slot::Key(uid);
        }
    }

    /// `set_table_resize`: a table of the smallest power of two above `used_min` (at least 8),
    /// the keys reinserted in old table order and the dummies dropped.
    fn resize(&mut self, used_min: usize) {
        let mut size = TABLE_SIZE_MIN;
        while size <= used_min {
            size = size.saturating_mul(2);
        }
        if size == TABLE_SIZE_MIN && self.slots.len() == TABLE_SIZE_MIN && self.fill == self.used {
            // CPython keeps the small table as it is when it has no dummies to purge.
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot::Empty; size]);
        for slot in old {
            if let Slot::Key(uid) = slot {
                self.insert_clean(uid);
            }
        }
        self.fill = self.used;
    }

    /// `set_insert_clean`: places a key known to be absent into a table without dummies.
    fn insert_clean(&mut self, uid: u16) {
        let mask = self.mask();
        let mut index = usize::from(uid) & mask;
        let mut perturb = usize::from(uid);
        loop {
            if self.slots.get(index) == Some(&Slot::Empty) {
                self.put(index, uid);
                return;
            }
            if index.saturating_add(LINEAR_PROBES) <= mask {
                for offset in 1..=LINEAR_PROBES {
                    let at = index.wrapping_add(offset);
                    if self.slots.get(at) == Some(&Slot::Empty) {
                        self.put(at, uid);
                        return;
                    }
                }
            }
            perturb >>= PERTURB_SHIFT;
            index = next_index(index, perturb, mask);
        }
    }

    /// `s.update(other)` for another set: CPython's `set_merge`, with its two shortcuts for an
    /// empty target.
    pub fn update(&mut self, other: &PySet) {
        if other.used == 0 {
            return;
        }
        if self.fill.saturating_add(other.used).saturating_mul(5) >= self.mask().saturating_mul(3) {
            self.resize(self.used.saturating_add(other.used).saturating_mul(2));
        }
        if self.fill == 0 && self.mask() == other.mask() && other.fill == other.used {
            // Same size, nothing here, no dummies there: CPython copies the table slot by slot.
            self.slots.clone_from(&other.slots);
            self.fill = other.fill;
            self.used = other.used;
            return;
        }
        if self.fill == 0 {
            self.fill = other.used;
            self.used = other.used;
            for uid in other.iter() {
                self.insert_clean(uid);
            }
            return;
        }
        for uid in other.iter() {
            self.add(uid);
        }
    }

    /// `s.clear()`: back to a fresh 8-slot table.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// `s.discard(uid)`: the slot becomes a dummy.
    pub fn discard(&mut self, uid: u16) {
        if let Some(at) = self.find(uid)
            && let Some(slot) = self.slots.get_mut(at)
        {
            *slot = Slot::Dummy;
            self.used = self.used.saturating_sub(1);
        }
    }

    /// Keeps the uids for which `keep` holds, discarding the others (in table order).
    pub fn retain(&mut self, mut keep: impl FnMut(u16) -> bool) {
        let gone: Vec<u16> = self.iter().filter(|uid| !keep(*uid)).collect();
        for uid in gone {
            self.discard(uid);
        }
    }

    /// The uids in CPython's iteration order (`list(s)`).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots.iter().filter_map(|slot| match slot {
            Slot::Key(uid) => Some(*uid),
            Slot::Empty | Slot::Dummy => None,
        })
    }

    /// The uids in ascending order.
    pub fn sorted(&self) -> Vec<u16> {
        let mut uids: Vec<u16> = self.iter().collect();
        uids.sort_unstable();
        uids
    }
}

/// Why a serialised set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CPython set table: {0}")]
pub struct PySetInvalid(String);

impl PySet {
    /// Checks a table read from outside: its size, its counts and every key's place.
    fn checked(slots: Vec<Slot>) -> Result<Self, PySetInvalid> {
        let size = slots.len();
        if size < TABLE_SIZE_MIN || !size.is_power_of_two() || size > (1 << 18) {
            return Err(PySetInvalid(format!("a table of {size} slots")));
        }
        let used = slots.iter().filter(|s| matches!(s, Slot::Key(_))).count();
        let fill = slots.iter().filter(|s| !matches!(s, Slot::Empty)).count();
        let set = Self { slots, fill, used };
        if fill.saturating_mul(5) >= set.mask().saturating_mul(3) {
            return Err(PySetInvalid(format!("{fill} of {size} slots filled")));
        }
        for (at, slot) in set.slots.iter().enumerate() {
            if let Slot::Key(uid) = slot
                && set.find(*uid) != Some(at)
            {
                return Err(PySetInvalid(format!(
                    "uid {uid} in slot {at} is out of place"
                )));
            }
        }
        Ok(set)
    }
}

/// The JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PySetJson {
    size: usize,
    keys: Vec<(usize, u16)>,
    #[serde(default)]
    dummies: Vec<usize>,
}

/// What JSON may hold: the table, or a list of uids from schemas 1 to 3.
#[derive(Deserialize)]
#[serde(untagged)]
enum PySetJsonIn {
    Table(PySetJson),
    List(Vec<u16>),
}

impl Serialize for PySet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return self.slots.serialize(serializer);
        }
        let mut json = PySetJson {
            size: self.slots.len(),
            keys: Vec::with_capacity(self.used),
            dummies: Vec::new(),
        };
        for (at, slot) in self.slots.iter().enumerate() {
            match slot {
                Slot::Key(uid) => json.keys.push((at, *uid)),
                Slot::Dummy => json.dummies.push(at),
                Slot::Empty => {}
            }
        }
        json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PySet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if !deserializer.is_human_readable() {
            let slots = Vec::<Slot>::deserialize(deserializer)?;
            return Self::checked(slots).map_err(D::Error::custom);
        }
        match PySetJsonIn::deserialize(deserializer)? {
            PySetJsonIn::List(uids) => Ok(Self::from_list(uids)),
            PySetJsonIn::Table(json) => {
                if json.size > (1 << 18) {
                    return Err(D::Error::custom(format!("a table of {} slots", json.size)));
                }
                let mut slots = vec![Slot::Empty; json.size];
                let placed = json
                    .keys
                    .iter()
                    .map(|(at, uid)| (*at, Slot::Key(*uid)))
                    .chain(json.dummies.iter().map(|at| (*at, Slot::Dummy)));
                for (at, slot) in placed {
                    match slots.get_mut(at) {
                        Some(free @ Slot::Empty) => *free = slot,
                        _ => return Err(D::Error::custom(format!("slot {at} is taken or absent"))),
                    }
                }
                Self::checked(slots).map_err(D::Error::custom)
            }
        }
    }
}

/// How many slots after `index` CPython scans linearly before it perturbs.
fn probes_at(index: usize, mask: usize) -> usize {
    if index.saturating_add(LINEAR_PROBES) <= mask {
        LINEAR_PROBES
    } else {
        0
    }
}

/// `i = (i * 5 + 1 + perturb) & mask`, in CPython's wrapping `size_t` arithmetic.
fn next_index(index: usize, perturb: usize, mask: usize) -> usize {
    index.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_the_issue_quotes_cpython() {
        assert_eq!(
            PySet::from_list([10, 40]).iter().collect::<Vec<_>>(),
            [40, 10]
        );
        assert_eq!(
            PySet::from_list([7, 100, 39, 64, 33])
                .iter()
                .collect::<Vec<_>>(),
            [64, 33, 100, 39, 7]
        );
    }

    #[test]
    fn both_forms_round_trip_and_damage_is_refused() {
        let mut set = PySet::from_list([64, 33, 100, 39, 7]);
        set.discard(39);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<PySet>(&json).unwrap(), set);
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&set, config).unwrap();
        let (back, _): (PySet, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, set);
        let legacy: PySet = serde_json::from_str("[3, 1, 2]").unwrap();
        assert_eq!(legacy.iter().collect::<Vec<_>>(), [1, 2, 3]);
        // A key where no lookup would find it, and a table with no room to end a probe.
        assert!(serde_json::from_str::<PySet>(r#"{"size":8,"keys":[[0,5]]}"#).is_err());
        let full = r#"{"size":8,"keys":[[0,0],[1,1],[2,2],[3,3],[4,4]]}"#;
        assert!(serde_json::from_str::<PySet>(full).is_err());
        assert!(serde_json::from_str::<PySet>(r#"{"size":12,"keys":[]}"#).is_err());
    }

    #[test]
    fn discard_and_clear_keep_membership_right() {
        let mut set = PySet::from_list([3, 11, 19]);
        set.discard(11);
        assert!(!set.contains(11) && set.contains(19) && set.len() == 2);
        set.add(11);
        assert_eq!(set.sorted(), [3, 11, 19]);
        set.clear();
        assert!(set.is_empty());
    }
}
