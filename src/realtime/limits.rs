//! How many Socket.IO connections one user (`REALTIME_MAX_SOCKETS_PER_USER`) and one
//! client address (`REALTIME_MAX_SOCKETS_PER_IP`) hold on this instance.
//!
//! Per instance, not shared through Redis: a cap bounds what one account or one address
//! can make one instance hold (memory, file descriptors, presence entries to refresh),
//! which is a local cost; spread over N instances it holds at most N × the cap in all.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

/// The open connections per key (a user, a client address) of this instance.
#[derive(Debug)]
pub(crate) struct Caps<K: Eq + Hash + Clone> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

/// Connections per user.
pub(crate) type SocketsPerUser = Caps<Uuid>;
/// Connections per client address (its rate-limit bucket: an IPv6 /64).
pub(crate) type SocketsPerIp = Caps<String>;

/// One connection's place under a cap; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot<K: Eq + Hash + Clone> {
    owner: Arc<Caps<K>>,
    user: K,
}

impl<K: Eq + Hash + Clone> Caps<K> {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::default(),
        })
    }

    /// A place for one more connection of `user`, or `None` at the cap.
    pub(crate) fn take(self: &Arc<Self>, user: K) -> Option<Slot<K>> {
        let mut open = self.lock();
        let n = open.entry(user.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            user,
        })
    }

    /// Every key that holds at least one connection here now.
    pub(crate) fn keys(&self) -> Vec<K> {
        self.lock().keys().cloned().collect()
    }

    /// Connections `user` holds here now.
    #[cfg(test)]
    fn held(&self, user: K) -> usize {
        self.lock().get(&user).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
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

/// Joins of one user in progress on this instance. A join may read up to
/// `REPLAY_LIMIT` messages from the database; without this, one account's sockets
/// joining again and again kept the whole pool busy. Excess joins wait their turn
/// (bounded), so a user whose tabs all reconnect at once is served one after another.
#[derive(Debug)]
pub(crate) struct JoinsInProgress {
    max: usize,
    per_user: Mutex<HashMap<Uuid, Arc<tokio::sync::Semaphore>>>,
}

/// A join's turn; dropping it lets the next one of the same user in.
#[derive(Debug)]
pub(crate) struct Turn {
    owner: Arc<JoinsInProgress>,
    user: Uuid,
    gate: Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl JoinsInProgress {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_user: Mutex::default(),
        })
    }

    /// Waits (at most `within`) for one of `user`'s turns; `None` if none came.
    pub(crate) async fn enter(
        self: &Arc<Self>,
        user: Uuid,
        within: std::time::Duration,
    ) -> Option<Turn> {
        let gate = self
            .lock()
            .entry(user)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max)))
            .clone();
        let mut turn = Turn {
            owner: self.clone(),
            user,
            gate: gate.clone(),
            permit: None,
        };
        turn.permit = tokio::time::timeout(within, gate.acquire_owned())
            .await
            .ok()?
            .ok();
        turn.permit.is_some().then_some(turn)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<tokio::sync::Semaphore>>> {
        self.per_user.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        // Forget the user's gate once nobody holds or awaits it (the map's copy and
        // this one are the only references left).
        let mut map = self.owner.lock();
        if Arc::strong_count(&self.gate) == 2 && self.gate.available_permits() == self.owner.max {
            map.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_users_joins_take_turns_and_the_gate_is_forgotten_when_idle() {
        let joins = JoinsInProgress::new(2);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let short = std::time::Duration::from_millis(10);
        let first = joins.enter(ada, short).await.expect("a turn");
        let second = joins.enter(ada, short).await.expect("a turn");
        assert!(
            joins.enter(ada, short).await.is_none(),
            "a third waits, then gives up"
        );
        assert!(
            joins.enter(bob, short).await.is_some(),
            "others are not affected"
        );
        drop(first);
        let third = joins.enter(ada, short).await.expect("a freed turn");
        drop((second, third));
        assert!(joins.lock().is_empty(), "no gate is kept for idle users");
    }

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
