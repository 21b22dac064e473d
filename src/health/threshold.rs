//! The FailureThreshold rule (pure): the first result of a new check is its
//! verdict at once; afterwards it takes `threshold` consecutive results that
//! disagree with the verdict to change it, in either direction.

/// The verdict of one check and the run of results that disagree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    current: Option<bool>,
    streak: u8,
}

impl Verdict {
    /// A check whose last applied verdict is `current` (`None`: never probed).
    pub fn new(current: Option<bool>) -> Self {
        Self { current, streak: 0 }
    }

    /// The verdict (`true` passing), `None` before the first result.
    pub fn current(&self) -> Option<bool> {
        self.current
    }

    /// Consecutive results that disagree with the verdict so far.
    pub fn streak(&self) -> u8 {
        self.streak
    }

    /// Records one probe result; returns the new verdict when it changes.
    pub fn observe(&mut self, passing: bool, threshold: u8) -> Option<bool> {
        match self.current {
            None => {
                self.current = Some(passing);
                self.streak = 0;
                Some(passing)
            }
            Some(v) if v == passing => {
                self.streak = 0;
                None
            }
            Some(_) => {
                self.streak = self.streak.saturating_add(1);
                if self.streak >= threshold.max(1) {
                    self.current = Some(passing);
                    self.streak = 0;
                    Some(passing)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: &mut Verdict, results: &[bool], threshold: u8) -> Vec<Option<bool>> {
        results.iter().map(|r| v.observe(*r, threshold)).collect()
    }

    #[test]
    fn the_first_result_applies_at_once() {
        let mut v = Verdict::default();
        assert_eq!(v.observe(false, 3), Some(false));
        assert_eq!(v.current(), Some(false));
        let mut v = Verdict::default();
        assert_eq!(v.observe(true, 10), Some(true));
    }

    #[test]
    fn threshold_consecutive_failures_flip_down_and_as_many_successes_flip_up() {
        let mut v = Verdict::new(Some(true));
        assert_eq!(
            run(&mut v, &[false, false, false], 3),
            [None, None, Some(false)]
        );
        assert_eq!(v.current(), Some(false));
        assert_eq!(
            run(&mut v, &[true, true, true], 3),
            [None, None, Some(true)]
        );
    }

    #[test]
    fn an_agreeing_result_resets_the_run() {
        let mut v = Verdict::new(Some(true));
        assert_eq!(
            run(&mut v, &[false, false, true, false, false], 3),
            [None; 5]
        );
        assert_eq!(v.streak(), 2);
        assert_eq!(v.observe(false, 3), Some(false));
    }

    #[test]
    fn threshold_one_follows_every_result() {
        let mut v = Verdict::new(Some(true));
        assert_eq!(
            run(&mut v, &[false, true, true, false], 1),
            [Some(false), Some(true), None, Some(false)]
        );
    }

    #[test]
    fn a_lowered_threshold_applies_to_the_run_so_far() {
        let mut v = Verdict::new(Some(true));
        assert_eq!(run(&mut v, &[false, false], 5), [None, None]);
        assert_eq!(v.observe(false, 2), Some(false));
        // A threshold of 0 is treated as 1.
        assert_eq!(v.observe(true, 0), Some(true));
    }
}
