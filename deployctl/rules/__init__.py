"""Pure decisions over model values: the deploy-file grammar, validation, plan, gates, freezes, promotion, approvals, CODEOWNERS. No I/O."""
