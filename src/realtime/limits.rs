//! How many Socket.IO connections one user holds on this instance
//! (`REALTIME_MAX_SOCKETS_PER_USER`).
//!
//! Per instance, not shared through Redis: the cap bounds what one account can make
//! one instance hold (memory, file descriptors, presence entries to refresh), which is
//! a local cost; a user spread over N instances holds at most N × the cap in all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

/// The open connections per user of this instance.
#[derive(Debug)]
pub(crate) struct SocketsPerUser {
    max: usize,
    open: Mutex<HashMap<Uuid, usize>>,
}

/// One connection's place under its user's cap; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    owner: Arc<SocketsPerUser>,
    user: Uuid,
}

impl SocketsPerUser {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::default(),
        })
    }

    /// A place for one more connection of `user`, or `None` at the cap.
    pub(crate) fn take(self: &Arc<Self>, user: Uuid) -> Option<Slot> {
        let mut open = self.lock();
        let n = open.entry(user).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            user,
        })
    }

    /// Connections `user` holds here now.
    #[cfg(test)]
    fn held(&self, user: Uuid) -> usize {
        self.lock().get(&user).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_per_user_and_a_closed_connection_frees_its_place() {
        let limits = SocketsPerUser::new(2);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = limits.take(ada).expect("first");
        let _second = limits.take(ada).expect("second");
        assert!(limits.take(ada).is_none(), "a third is over the cap");
        assert!(
            limits.take(bob).is_some(),
            "another user has a cap of their own"
        );
        drop(first);
        assert_eq!(limits.held(ada), 1);
        assert!(
            limits.take(ada).is_some(),
            "a freed place can be taken again"
        );
    }
}
