//! A count of open connections with a cap read at each accept, so a reload can move the cap.
//! The count is the `pushgate_connections_open` gauge of its listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Open connections (or sessions) of one listener.
#[derive(Debug, Clone)]
pub struct Slots {
    open: Arc<AtomicUsize>,
    listener: &'static str,
}

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Slots);

impl Slots {
    /// The slots of `listener` (`http`, `smtp`: the gauge's label).
    pub fn new(listener: &'static str) -> Slots {
        Slots {
            open: Arc::default(),
            listener,
        }
    }

    /// A slot if fewer than `max` are taken.
    pub fn take(&self, max: usize) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        crate::metrics::connection_opened(self.listener);
        Some(Slot(self.clone()))
    }

    /// How many are taken now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::connection_closed(self.0.listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_a_dropped_slot_is_free_again() {
        let slots = Slots::new("test");
        let a = slots.take(2).unwrap();
        let _b = slots.take(2).unwrap();
        assert!(slots.take(2).is_none());
        assert_eq!(slots.open(), 2);
        drop(a);
        assert!(slots.take(2).is_some());
        // A lower cap after a reload refuses until enough have closed.
        assert!(slots.take(1).is_none());
    }
}
