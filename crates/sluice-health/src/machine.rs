//! Rise/fall: a server goes out after `fall` failures in a row and comes back after `rise`
//! successes in a row. A server starts up, so traffic flows from the first moment; the
//! first failures count towards `fall` as usual.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameUp,
}

#[derive(Debug, Clone)]
pub struct Machine {
    rise: u32,
    fall: u32,
    up: bool,
    /// Results in a row that disagree with the current state.
    streak: u32,
}

impl Machine {
    pub fn new(rise: u32, fall: u32) -> Self {
        Machine {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Down until `rise` successes in a row, whatever it was.
    pub fn require_rise(&mut self) {
        self.up = false;
        self.streak = 0;
    }

    /// Records one result; says when it changes the state.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok {
            Transition::CameUp
        } else {
            Transition::WentDown
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_fall_failures_in_a_row() {
        let mut m = Machine::new(2, 3);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None, "a success resets the streak");
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some(Transition::WentDown));
        assert!(!m.is_up());
    }

    #[test]
    fn comes_back_after_rise_successes_in_a_row() {
        let mut m = Machine::new(2, 1);
        assert_eq!(m.observe(false), Some(Transition::WentDown));
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), Some(Transition::CameUp));
        assert!(m.is_up());
    }
}
