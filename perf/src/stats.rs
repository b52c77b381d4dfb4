//! The maths of a side-by-side report: repeated samples reduce to a median
//! and a spread, and targets compare medians as ratios.

use crate::PerfError;

/// Repeated measurements of one figure (runs alternate A/B/A/B, so each
/// target gets several samples taken under similar noise).
#[derive(Debug, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// Keeps the finite values; at least one is needed.
    pub fn new(values: impl IntoIterator<Item = f64>) -> Result<Self, PerfError> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Err(PerfError::NoSamples);
        }
        v.sort_by(f64::total_cmp);
        Ok(Samples(v))
    }

    /// The middle value (mean of the two middle ones for an even count).
    pub fn median(&self) -> f64 {
        let n = self.0.len();
        if n % 2 == 1 {
            self.0[n / 2]
        } else {
            (self.0[n / 2 - 1] + self.0[n / 2]) / 2.0
        }
    }

    /// Smallest value.
    pub fn min(&self) -> f64 {
        self.0[0]
    }

    /// Largest value.
    pub fn max(&self) -> f64 {
        self.0[self.0.len() - 1]
    }

    /// (max - min) / median: how far apart repetitions landed, relative to
    /// the figure itself. 0 for a single sample.
    pub fn spread(&self) -> f64 {
        let m = self.median();
        if m == 0.0 {
            0.0
        } else {
            (self.max() - self.min()) / m.abs()
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: construction requires a sample.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// ours / theirs on medians, for "higher is better" figures (IOPS, bytes/s).
/// `None` when the peer measured zero.
pub fn ratio(ours: &Samples, theirs: &Samples) -> Option<f64> {
    let t = theirs.median();
    (t != 0.0).then(|| ours.median() / t)
}

/// Whether `measured` meets a "at least `target`x" goal.
pub fn meets(measured: Option<f64>, target: f64) -> bool {
    measured.is_some_and(|m| m >= target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Samples::new([3.0, 1.0, 2.0]).unwrap().median(), 2.0);
        assert_eq!(Samples::new([4.0, 1.0, 3.0, 2.0]).unwrap().median(), 2.5);
        assert_eq!(Samples::new([7.0]).unwrap().median(), 7.0);
    }

    #[test]
    fn spread_is_relative_range() {
        let s = Samples::new([90.0, 100.0, 110.0]).unwrap();
        assert!((s.spread() - 0.2).abs() < 1e-12);
        assert_eq!(Samples::new([5.0]).unwrap().spread(), 0.0);
    }

    #[test]
    fn non_finite_values_are_dropped_and_empty_is_an_error() {
        let s = Samples::new([f64::NAN, 1.0, f64::INFINITY]).unwrap();
        assert_eq!(s.len(), 1);
        assert!(matches!(
            Samples::new([f64::NAN]),
            Err(PerfError::NoSamples)
        ));
    }

    #[test]
    fn ratios_compare_medians() {
        let ours = Samples::new([150.0, 160.0, 140.0]).unwrap();
        let qsd = Samples::new([100.0, 90.0, 110.0]).unwrap();
        let r = ratio(&ours, &qsd).unwrap();
        assert!((r - 1.5).abs() < 1e-12);
        assert!(meets(Some(r), 1.5));
        assert!(!meets(Some(r), 1.6));
        assert_eq!(ratio(&ours, &Samples::new([0.0]).unwrap()), None);
        assert!(!meets(None, 0.9));
    }
}
