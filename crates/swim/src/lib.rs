//! SWIM membership for HADSS (placeholder until the SWIM issue lands).
