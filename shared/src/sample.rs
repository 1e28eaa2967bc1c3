//! placeholder: the sample-data generator is being written.
