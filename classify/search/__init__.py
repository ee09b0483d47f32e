"""How stage 2 chooses a model's parameters: the split (:mod:`.split`), the cross-validated grid
search (:mod:`.grid`), the logistic regression's regularisation path (:mod:`.regpath`) in the
span of the training rows (:mod:`.rowspace`), what a search returns (:mod:`.result`), and
where its fits run (:mod:`.engines`)."""
