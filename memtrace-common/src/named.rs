//! `named_enum!`: a `#[repr(u32)]` enum that both sides share, defined once with the list of
//! all its values and their names, so no side keeps a hand-written copy of either.

/// Defines a `#[repr(u32)]` enum with, for every variant, its value and its stable name (the
/// word JSON output and Prometheus labels use), plus:
/// - `ALL`: every value in declaration order, and `COUNT`;
/// - `name(self)`: the stable name;
/// - `from_u32(value)`: the variant with that value, if any (records from the kernel carry
///   enums as plain `u32`).
///
/// Enums used as array indices in the kernel programs declare their values `0..COUNT` in
/// order; `tests::indices_are_dense` checks every one that must.
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $value:literal => $text:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $(
                $(#[$variant_meta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];
            /// How many values there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable name of the value, as JSON output and Prometheus labels show it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The variant with this value, if any.
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl $crate::Named for $name {
            const ALL: &'static [Self] = Self::ALL;

            fn name(self) -> &'static str {
                self.name()
            }
        }
    };
}

/// An enum whose every value has a stable name: what userspace keys JSON objects, Prometheus
/// labels and report lines by, so each lists every value without a copy of the list.
pub trait Named: Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The stable name of the value.
    fn name(self) -> &'static str;
}

#[cfg(test)]
mod tests {
    named_enum! {
        /// A test enum.
        pub enum Sample {
            First = 0 => "first",
            Second = 1 => "second",
        }
    }

    #[test]
    fn values_names_and_lookup() {
        assert_eq!(Sample::ALL, &[Sample::First, Sample::Second]);
        assert_eq!(Sample::COUNT, 2);
        assert_eq!(Sample::Second.name(), "second");
        assert_eq!(Sample::from_u32(1), Some(Sample::Second));
        assert_eq!(Sample::from_u32(2), None);
    }

    /// Enums that index per-CPU arrays or offset tables in the kernel programs.
    #[test]
    fn indices_are_dense() {
        fn dense(values: impl Iterator<Item = u32>) -> bool {
            values.enumerate().all(|(i, v)| i as u32 == v)
        }
        assert!(dense(crate::lost::Lost::ALL.iter().map(|&v| v as u32)));
        assert!(dense(
            crate::events::stall::ReclaimKind::ALL
                .iter()
                .map(|&v| v as u32)
        ));
        assert!(dense(crate::fields::Field::ALL.iter().map(|&v| v as u32)));
        assert!(dense(crate::members::Member::ALL.iter().map(|&v| v as u32)));
        assert!(dense(crate::hooks::Program::ALL.iter().map(|&v| v as u32)));
    }
}
