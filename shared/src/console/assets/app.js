/* The console: see pages.rs. */
